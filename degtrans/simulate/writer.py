"""The shard writer: simulate the samples of one planned shard and write them atomically.

A shard is a Parquet file of the pair format (``degtrans.pairs``) written under a temporary name and
renamed; its metadata carries the plan's fingerprint and, at close, its row count, rows per camera and
skipped images, so a rerun can tell a complete shard of this plan from a partial one or one of another
dataset.

Samples are simulated a row group at a time, ordered by camera inside the group, and written in the
planned order: one at a time on the CPU (``sample.simulate_sample``), or, on a GPU, the whole group in one
pass (``degtrans.simulate.batch``) while threads decode the next group's frames and encode the last
one's rows. PSF fields are loaded once per worker process (``load_field_cached``), so the cost of a
pair does not depend on the size of the catalogue.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from degtrans.atomic import atomic_path
from degtrans.errors import InputError
from degtrans.field import PSFField
from degtrans.pairs import (
    IMAGE_COLUMNS,
    PARAM_COLUMNS,
    SHARD_HEADER_KEY,
    SHARD_INFO_KEY,
    file_sha256,
    rows_to_table,
    shard_schema,
)
from degtrans.simulate.batch import BatchItem, FieldCache, simulate_batch
from degtrans.simulate.camera import CameraProfile
from degtrans.simulate.plan import ShardSpec
from degtrans.simulate.sample import simulate_sample
from degtrans.simulate.sources import Source, load_source

log = logging.getLogger(__name__)

MAX_ROW_GROUP_BYTES = 100 * 1000 * 1000
# The device path decodes the frames of the next groups on this many threads (OpenCV's decoders release
# the GIL), so large photographs with few patches each do not leave the GPU waiting.
DECODE_THREADS = 2
DECODE_AHEAD = 2
# PSF fields a worker process keeps (a 6x8 grid of 3x31x31 float32 PSFs is 0.55 MB).
FIELD_CACHE_SIZE = 256


@dataclass(frozen=True)
class ShardResult:
    """A written (or already complete) shard: its rows, checksum, skipped images and rows per camera."""

    index: int
    path: str
    rows: int
    sha256: str
    skipped: list[dict[str, str]]
    cameras: dict[str, int]


@lru_cache(maxsize=FIELD_CACHE_SIZE)
def load_field_cached(path: str, sha256: str) -> PSFField:
    """A camera's PSF field, read once per process (keyed by content: a changed file is read again)."""
    return PSFField.load(path)


def _decode(source: Source) -> tuple[np.ndarray | None, dict[str, str] | None]:
    try:
        return load_source(source), None
    except ValueError as error:
        log.warning("skipping %s", error)
        return None, {"source": source.where, "reason": str(error)}


def _load_images(
    spec: ShardSpec, needed: set[int], decoded: dict[int, np.ndarray | None]
) -> tuple[dict[int, np.ndarray | None], list[dict[str, str]]]:
    """The frames of sources ``needed`` (reused from ``decoded``) and the unreadable ones (``None``)."""
    images, skipped = {}, []
    for s in sorted(needed):
        if s in decoded:
            images[s] = decoded[s]
            continue
        images[s], error = _decode(spec.sources[s])
        if error is not None:
            skipped.append(error)
    return images, skipped


def _group_items(
    spec: ShardSpec, group: list[tuple[str, int, int, int]], images: dict[int, np.ndarray | None]
) -> list[tuple[int, BatchItem, str]]:
    """``(index in group, item, source name)`` of the group's samples with a readable frame, camera by
    camera (on a GPU a camera's patches then run back to back)."""
    profiles = {c: CameraProfile.from_dict(spec.cameras[c].profile) for c in {c for _, _, c, _ in group}}
    items = []
    for i in sorted(range(len(group)), key=lambda i: group[i][2]):
        sample_id, s, c, _ = group[i]
        if images[s] is None:
            continue
        source, camera = spec.sources[s], spec.cameras[c]
        psf_field = load_field_cached(camera.field_path, camera.field_sha256)
        frame = (source.height, source.width)
        if spec.fit_field and psf_field.image_size != frame:
            psf_field = PSFField(psf_field.psfs, frame, psf_field.channels, psf_field.domain, psf_field.meta)
        items.append((i, BatchItem(images[s], psf_field, profiles[c], sample_id, camera.name), source.name))
    return items


def _in_planned_order(items: list[tuple[int, BatchItem, str]], rows: list[dict[str, Any]]) -> list[dict]:
    for (_, _, source), row in zip(items, rows, strict=True):
        row["source"] = source
    return [row for _, row in sorted(zip([i for i, _, _ in items], rows, strict=True), key=lambda p: p[0])]


def write_shard(
    spec: ShardSpec, device: torch.device | str = "cpu", batched: bool | None = None
) -> ShardResult:
    """Simulate and write one shard atomically; an unreadable image is skipped and recorded.

    Args:
        spec: the planned shard.
        device: where the patches are blurred and developed.
        batched: develop each row group in one pass (``degtrans.simulate.batch``) while CPU threads
            decode the next group's frames and encode the last group's rows; the default: on any device
            but the CPU, whose one-sample path needs no copies. Both write the same rows within 1 DN.
    """
    batched = torch.device(device).type != "cpu" if batched is None else batched
    patch, raw = spec.settings.patch_size, spec.settings.store_raw
    header = {"shard": spec.index, "fingerprint": spec.fingerprint, "patch_size": patch}
    schema = shard_schema(PARAM_COLUMNS, raw, header)
    per_row = patch * patch * 3 * 2 * 2 + (patch * patch * 2 if raw else 0)
    group = max(1, min(spec.row_group_rows, MAX_ROW_GROUP_BYTES // per_row))
    final = spec.path
    skipped: list[dict[str, str]] = []
    counts: Counter[str] = Counter()
    chunks = [list(spec.samples[start : start + group]) for start in range(0, len(spec.samples), group)]
    with atomic_path(final) as tmp:
        writer = pq.ParquetWriter(
            tmp,
            schema,
            compression="zstd",
            use_dictionary=False,
            column_encoding={
                f"{n}.list.element": "BYTE_STREAM_SPLIT" for n in IMAGE_COLUMNS if n in schema.names
            },
            write_statistics=[n for n in schema.names if n not in IMAGE_COLUMNS],
        )

        def write(rows: list[dict[str, Any]]) -> None:
            if rows:
                writer.write_table(rows_to_table(rows, schema), row_group_size=group)
                counts.update(row["camera"] for row in rows)

        try:
            if batched:
                skipped = _write_batched(spec, chunks, device, write)
            else:
                images: dict[int, np.ndarray | None] = {}
                for chunk in chunks:
                    # Decoded frames are kept only while the next group may still need them.
                    images, errors = _load_images(spec, {s for _, s, _, _ in chunk}, images)
                    skipped += errors
                    items = _group_items(spec, chunk, images)
                    write(_in_planned_order(items, [
                        simulate_sample(it.image, it.field, it.camera, it.sample_id, spec.settings,
                                        it.camera_name, device)
                        for _, it, _ in items
                    ]))  # fmt: skip
            total = sum(counts.values())
            info = {"rows": total, "skipped": skipped, "cameras": dict(sorted(counts.items()))}
            writer.add_key_value_metadata({SHARD_INFO_KEY: json.dumps(info)})
        finally:
            writer.close()
    return ShardResult(spec.index, str(final), total, file_sha256(final), skipped, dict(counts))


def _write_batched(
    spec: ShardSpec,
    chunks: list[list[tuple[str, int, int, int]]],
    device: torch.device | str,
    write: Callable[[list[dict[str, Any]]], None],
) -> list[dict[str, str]]:
    """Row groups through the device path. Threads decode the frames of the next ``DECODE_AHEAD`` groups
    and one encodes and writes the last group's rows (in order) while this one draws the current group
    and launches it on the device."""
    skipped: list[dict[str, str]] = []
    fields = FieldCache(device)
    needed = [sorted({s for _, s, _, _ in chunk}) for chunk in chunks]
    decoding: dict[int, Future] = {}
    with (
        ThreadPoolExecutor(DECODE_THREADS, "degtrans-decode") as decoder,
        ThreadPoolExecutor(1, "degtrans-encode") as encoder,
    ):
        written = []
        for g, chunk in enumerate(chunks):
            for s in (s for ahead in needed[g : g + 1 + DECODE_AHEAD] for s in ahead):
                if s not in decoding:
                    decoding[s] = decoder.submit(_decode, spec.sources[s])
            images = {}
            for s in needed[g]:
                images[s], error = decoding[s].result()
                if error is not None and error not in skipped:
                    skipped.append(error)
            # Decoded frames are kept only while a later group still needs them.
            later = {s for ahead in needed[g + 1 :] for s in ahead}
            decoding = {s: f for s, f in decoding.items() if s in later}
            items = _group_items(spec, chunk, images)
            pending = simulate_batch([it for _, it, _ in items], spec.settings, device, fields)

            def encode(items=items, pending=pending) -> None:
                write(_in_planned_order(items, pending.rows()))

            written.append(encoder.submit(encode))
        for done in written:
            done.result()
    return skipped


def existing_shard(spec: ShardSpec) -> ShardResult | None:
    """The result of a shard already on disk and complete for this plan, else ``None``.

    A shard of another plan (different inputs or config) is an error: the output belongs to another dataset.
    """
    path = spec.path
    if not path.exists():
        return None
    try:
        metadata = pq.read_metadata(path)
        kv = metadata.metadata or {}
        header = json.loads(kv[SHARD_HEADER_KEY])
        info = json.loads(kv[SHARD_INFO_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException) as error:
        log.warning("rewriting unreadable shard %s (%s)", path, error)
        path.unlink()
        return None
    if header.get("fingerprint") != spec.fingerprint:
        raise InputError(
            f"{path}: this shard belongs to another dataset (other inputs or config); "
            f"write to a new output directory or delete {spec.output}"
        )
    if metadata.num_rows != info["rows"]:
        log.warning("rewriting incomplete shard %s", path)
        path.unlink()
        return None
    rows, skipped, cameras = int(info["rows"]), list(info["skipped"]), dict(info["cameras"])
    return ShardResult(spec.index, str(path), rows, file_sha256(path), skipped, cameras)
