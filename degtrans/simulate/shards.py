"""The shard writer: simulate the samples of one planned shard and write them atomically.

A shard is a Parquet file of the pair format (``degtrans.pairs``) written under a temporary name and
renamed; its metadata carries the plan's fingerprint and, at close, its row count, rows per camera and
skipped images, so a rerun can tell a complete shard of this plan from a partial one or one of another
dataset.

Samples are simulated a row group at a time, ordered by camera inside the group (on a GPU a camera's
patches run back to back), and written in the planned order. PSF fields are loaded once per worker
process (``load_field_cached``), so the cost of a pair does not depend on the size of the catalogue.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from degtrans.atomic import atomic_path
from degtrans.field import PSFField
from degtrans.pairs import (
    IMAGE_COLUMNS,
    SHARD_HEADER_KEY,
    SHARD_INFO_KEY,
    encode_u16,
    file_sha256,
    rows_to_table,
    shard_schema,
)
from degtrans.simulate.camera import CameraProfile
from degtrans.simulate.degrade import context_window, sample_generator, sample_params, simulate_pair
from degtrans.simulate.isp import ISPRanges
from degtrans.simulate.noise import NoiseModel
from degtrans.simulate.plan import ShardSpec
from degtrans.simulate.sources import Source, load_source

log = logging.getLogger(__name__)

MAX_ROW_GROUP_BYTES = 100 * 1000 * 1000
# PSF fields a worker process keeps (a 6x8 grid of 3x31x31 float32 PSFs is 0.55 MB).
FIELD_CACHE_SIZE = 256


@dataclass(frozen=True)
class ShardResult:
    """A written (or already complete) shard: its rows, checksum, rows per camera and skipped images."""

    index: int
    path: str
    rows: int
    sha256: str
    skipped: list[dict[str, str]] = field(default_factory=list)
    written: bool = True
    cameras: dict[str, int] = field(default_factory=dict)


@lru_cache(maxsize=FIELD_CACHE_SIZE)
def load_field_cached(path: str, sha256: str) -> PSFField:
    """A camera's PSF field, read once per process (keyed by content: a changed file is read again)."""
    return PSFField.load(path)


def _schema(spec: ShardSpec, store_raw: bool) -> pa.Schema:
    probe = sample_params(torch.Generator().manual_seed(0), CameraProfile.from_dict(spec.cameras[0].profile))
    header = {"shard": spec.index, "fingerprint": spec.fingerprint, "patch_size": spec.settings["patch_size"]}
    return shard_schema(list(probe.columns()), store_raw, header)


def _row_group_rows(settings: dict[str, Any]) -> int:
    patch = settings["patch_size"]
    per_row = patch * patch * 3 * 2 * 2 + (patch * patch * 2 if settings["store_raw"] else 0)
    return max(1, min(settings["row_group_rows"], MAX_ROW_GROUP_BYTES // per_row))


def _shard_field(base: PSFField, source: Source, fit: bool) -> PSFField:
    if not fit or base.image_size == (source.height, source.width):
        return base
    return PSFField(base.psfs, (source.height, source.width), base.channels, base.domain, base.meta)


def _hwc(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor -> (H, W, C) float64 array: pixels are quantised to uint16 from double precision."""
    return image.detach().permute(1, 2, 0).double().cpu().numpy()


def simulate_sample(
    image: np.ndarray,
    psf_field: PSFField,
    camera: CameraProfile,
    sample_id: str,
    settings: dict[str, Any],
    camera_name: str,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """One row of the dataset from its clean frame; depends only on ``(seed, sample_id)`` and inputs.

    On a CUDA ``device`` the patch is blurred by the Triton kernel and developed there; the random draws
    stay on the CPU generator, so the row equals the CPU one within the kernels' tolerance.
    """
    patch = settings["patch_size"]
    height, width = image.shape[:2]
    generator = sample_generator(settings["seed"], sample_id)
    y0 = int(torch.randint(0, height - patch + 1, (1,), generator=generator))
    x0 = int(torch.randint(0, width - patch + 1, (1,), generator=generator))
    noise_model = NoiseModel(
        shot_min=10.0 ** settings["log_shot_noise_min"],
        shot_max=10.0 ** settings["log_shot_noise_max"],
        read_slope=camera.noise.read_slope,
        read_intercept=camera.noise.read_intercept,
        read_sigma=camera.noise.read_sigma,
    )
    params = sample_params(generator, camera, ISPRanges(), noise_model)
    top, bottom, left, right = context_window(y0, x0, (patch, patch), (height, width), psf_field.kernel_size)
    crop = torch.from_numpy(np.ascontiguousarray(image[top:bottom, left:right])).permute(2, 0, 1)[None]
    crop = crop.to(device)
    pattern = camera.cfa_pattern if settings["cfa_pattern"] == "camera" else settings["cfa_pattern"]
    pair = simulate_pair(
        crop,
        psf_field,
        camera,
        params,
        generator,
        offset=(top, left),
        frame_size=(height, width),
        crop=(y0 - top, x0 - left, patch, patch),
        cfa_pattern=pattern,
        demosaic_method=settings["demosaic"],
        noise=settings["noise"],
        clean_cfa=settings["clean_cfa"],
    )
    row: dict[str, Any] = {
        "sample_id": sample_id,
        "camera": camera_name,
        "y0": y0,
        "x0": x0,
        "frame_h": height,
        "frame_w": width,
        "height": patch,
        "width": patch,
        "channels": 3,
        "clean": encode_u16(_hwc(pair.clean[0])),
        "degraded": encode_u16(_hwc(pair.degraded[0])),
        **params.columns(),
    }
    if settings["store_raw"]:
        from degtrans.simulate.cfa import phase_pattern

        black = float(np.mean(camera.black_level))
        dn = black + pair.raw[0, 0].detach().double().cpu().numpy() * (camera.white_level - black)
        row["raw"] = np.clip(np.rint(dn), 0, 65535).astype(np.uint16).ravel()
        row["raw_pattern"] = phase_pattern(pattern, (y0, x0))
        row["raw_black_level"] = black
        row["raw_white_level"] = float(camera.white_level)
    return row


def _simulate_group(
    spec: ShardSpec,
    group: list[tuple[str, int, int, int]],
    images: dict[int, np.ndarray | None],
    skipped: list[dict[str, str]],
    device: torch.device | str,
) -> list[dict[str, Any]]:
    """The rows of one row group, computed camera by camera and returned in the planned order."""
    settings = spec.settings
    profiles = {c: CameraProfile.from_dict(spec.cameras[c].profile) for c in {c for _, _, c, _ in group}}
    rows: dict[int, dict[str, Any]] = {}
    for i in sorted(range(len(group)), key=lambda i: group[i][2]):
        sample_id, s, c, _ = group[i]
        source = spec.sources[s]
        if s not in images:
            try:
                images[s] = load_source(source)
            except ValueError as error:
                log.warning("skipping %s", error)
                skipped.append({"source": source.where, "reason": str(error)})
                images[s] = None
        if images[s] is None:
            continue
        camera = spec.cameras[c]
        psf_field = load_field_cached(camera.field_path, camera.field_sha256)
        row = simulate_sample(
            images[s],
            _shard_field(psf_field, source, settings["fit_field"]),
            profiles[c],
            sample_id,
            settings,
            camera.name,
            device,
        )
        row["source"] = source.name
        rows[i] = row
    return [rows[i] for i in sorted(rows)]


def write_shard(spec: ShardSpec, device: torch.device | str = "cpu") -> ShardResult:
    """Simulate and write one shard atomically; an unreadable image is skipped and recorded.

    Args:
        spec: the planned shard.
        device: where the patches are blurred and developed (``"cuda"``: the Triton path).
    """
    settings = spec.settings
    schema = _schema(spec, settings["store_raw"])
    group = _row_group_rows(settings)
    final = spec.path
    skipped: list[dict[str, str]] = []
    counts: Counter[str] = Counter()
    total = 0
    images: dict[int, np.ndarray | None] = {}
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
        try:
            for start in range(0, len(spec.samples), group):
                chunk = list(spec.samples[start : start + group])
                rows = _simulate_group(spec, chunk, images, skipped, device)
                # Decoded frames are kept only while the next group may still need them.
                keep = {s for _, s, _, _ in spec.samples[start + group : start + 2 * group]}
                images = {s: image for s, image in images.items() if s in keep}
                if rows:
                    writer.write_table(rows_to_table(rows, schema), row_group_size=group)
                    total += len(rows)
                    counts.update(row["camera"] for row in rows)
            info = {"rows": total, "skipped": skipped, "cameras": dict(sorted(counts.items()))}
            writer.add_key_value_metadata({SHARD_INFO_KEY: json.dumps(info)})
        finally:
            writer.close()
    return ShardResult(spec.index, str(final), total, file_sha256(final), skipped, cameras=dict(counts))


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
        raise ValueError(
            f"{path}: this shard belongs to another dataset (other inputs or config); "
            f"write to a new output directory or delete {spec.output}"
        )
    if metadata.num_rows != info["rows"]:
        log.warning("rewriting incomplete shard %s", path)
        path.unlink()
        return None
    return ShardResult(
        spec.index, str(path), int(info["rows"]), file_sha256(path), list(info["skipped"]), written=False,
        cameras=dict(info["cameras"]),
    )  # fmt: skip
