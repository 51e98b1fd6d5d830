"""Dataset synthesis without Ray: the driver. ``degtrans.cluster.synthesize`` runs the same shards as
Ray tasks.

Scan the sources (``sources``), plan cameras, samples and shards (``plan``), write the missing shards
(``writer``), then the manifest and ``_SUCCESS`` (``degtrans.pairs``, which also documents the layout).
Guarantees: a pair depends only on ``(seed, sample_id)``; each shard is written atomically; a rerun
writes only the missing shards; ``manifest.json`` and then ``_SUCCESS`` are written last; a finished
dataset is left untouched.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from degtrans.atomic import atomic_path
from degtrans.config import SimulateConfig, to_dict
from degtrans.errors import InputError
from degtrans.pairs import SHARD_PREFIX, file_sha256, is_complete, read_manifest, write_manifest
from degtrans.simulate.catalogue import CameraEntry, fields_as_entries, load_catalogue
from degtrans.simulate.plan import ShardSpec, check_frames, plan_shards, resolve_cameras
from degtrans.simulate.sources import list_images, scan_sources
from degtrans.simulate.writer import ShardResult, existing_shard, write_shard

log = logging.getLogger(__name__)


def serial_map(specs: Sequence[ShardSpec]) -> Iterator[ShardResult]:
    """Write shards one after another in this process."""
    for spec in specs:
        yield write_shard(spec)


MapShards = Callable[[Sequence[ShardSpec]], Iterable[ShardResult]]


def camera_entries(
    fields: Sequence[str | os.PathLike] | None,
    profiles: Sequence[str | os.PathLike] | None = None,
    catalogue: str | os.PathLike | None = None,
) -> list[CameraEntry]:
    """The cameras of a run: ``--psf`` fields (with ``--profile``) or a ``--cameras`` catalogue, not both."""
    if catalogue is not None:
        if fields or profiles:
            raise InputError("--cameras: give either a catalogue or --psf/--profile, not both")
        return load_catalogue(catalogue)
    return fields_as_entries(fields or [], profiles)


def build_dataset(
    images: Sequence[str | os.PathLike] | str | os.PathLike,
    fields: Sequence[str | os.PathLike] | None,
    output: str | os.PathLike,
    config: SimulateConfig,
    *,
    profiles: Sequence[str | os.PathLike] | None = None,
    catalogue: str | os.PathLike | None = None,
    map_shards: MapShards = serial_map,
    on_shard: Callable[[ShardResult], None] | None = None,
) -> dict[str, Any]:
    """Plan, write the missing shards with ``map_shards``, then the manifest and ``_SUCCESS``.

    Args:
        images: folder(s) or files of clean images (PNG/JPEG/TIFF), or Parquet files with an
            ``image`` column of encoded images (and optional ``name``).
        fields: PSF field files, one camera each (named after the file); ``None`` with ``catalogue``.
        output: dataset directory.
        config: the ``[simulate]`` section (``camera_choice``: every camera per patch, or one drawn).
        profiles: camera profile per field (bundled name, TOML or RAW file); one for all; default
            the field's ``meta["profile"]`` or ``canon-eos-5d-mark-ii``.
        catalogue: a camera catalogue (TOML file or directory, ``degtrans.simulate.catalogue``)
            instead of ``fields``.
        map_shards: runs shard specs, yielding results as they finish (serial here, Ray in cluster).
        on_shard: called after every finished shard (progress, tests).

    Returns:
        The summary: pairs, pairs written now, MPix, seconds, pairs/s, skipped, shards, noop.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    # Absolute paths: Ray workers (on other nodes too) do not share the driver's working directory.
    output = Path(output).resolve()
    sources, skipped = scan_sources(list_images(images))
    if not sources:
        raise InputError(f"--images: none of the images could be read ({len(skipped)} skipped)")
    if config.camera_choice == "auto":
        config = dataclasses.replace(config, camera_choice="all" if catalogue is None else "draw")
    cameras = resolve_cameras(camera_entries(fields, profiles, catalogue))
    check_frames(sources, cameras, config)
    specs = plan_shards(output, sources, cameras, config)
    print_ = specs[0].fingerprint
    if is_complete(output):
        manifest = read_manifest(output)
        if manifest.get("fingerprint") != print_:
            raise InputError(
                f"{output}: holds a finished dataset with other inputs or config; "
                "choose a new output directory"
            )
        log.info("%s is complete; nothing to do", output)
        return _summary(manifest, output, written=0, seconds=time.perf_counter() - start, noop=True)
    (output / "shards").mkdir(parents=True, exist_ok=True)
    (output / "fields").mkdir(parents=True, exist_ok=True)
    for stale in (output / "shards").glob(f".{SHARD_PREFIX}*"):
        stale.unlink(missing_ok=True)
    results = {r.index: r for r in (existing_shard(s) for s in specs) if r is not None}
    for camera in cameras:
        target = output / "fields" / f"{camera.name}.npz"
        if not target.exists() or file_sha256(target) != camera.field_sha256:
            with atomic_path(target) as tmp:
                shutil.copyfile(camera.field_path, tmp)

    missing = [s for s in specs if s.index not in results]
    planned = sum(len(s.samples) for s in specs)
    done_before = sum(r.rows for r in results.values())
    written = 0
    with tqdm(total=planned, initial=done_before, unit="pair", desc="simulate", dynamic_ncols=True) as bar:
        for result in map_shards(missing):
            results[result.index] = result
            written += result.rows
            bar.update(len(specs[result.index].samples))
            if on_shard is not None:
                on_shard(result)
    ordered = [results[s.index] for s in specs]
    counts: Counter[str] = Counter()
    for result in ordered:
        counts.update(result.cameras)
    manifest = {
        "fingerprint": print_,
        "patch_size": config.patch_size,
        "shards": [
            {"path": f"shards/{Path(r.path).name}", "rows": r.rows, "sha256": r.sha256} for r in ordered
        ],
        "samples": sum(r.rows for r in ordered),
        "cameras": {
            c.name: {
                "field": f"fields/{c.name}.npz",
                "sha256": c.field_sha256,
                "frame_h": c.frame[0],
                "frame_w": c.frame[1],
                "profile": c.profile,
                "weight": c.weight,
                "samples": counts[c.name],
            }
            for c in cameras
        },
        "skipped": _unique_sources(skipped + [entry for r in ordered for entry in r.skipped]),
        "sources": len(sources),
        "config": to_dict(config),
    }
    write_manifest(output, manifest)
    return _summary(manifest, output, written=written, seconds=time.perf_counter() - start, noop=False)


def _unique_sources(entries: list[dict[str, str]]) -> list[dict[str, str]]:
    """One entry per skipped image (an image whose samples span two shards is seen twice)."""
    seen: dict[str, dict[str, str]] = {}
    for entry in entries:
        seen.setdefault(entry["source"], entry)
    return list(seen.values())


def _summary(
    manifest: dict[str, Any], output: Path, written: int, seconds: float, noop: bool
) -> dict[str, Any]:
    patch = manifest["patch_size"]
    return {
        "output": str(output),
        "pairs": manifest["samples"],
        "pairs_written": written,
        "mpix_written": written * patch * patch / 1e6,
        "seconds": seconds,
        "pairs_per_s": written / seconds if seconds > 0 else 0.0,
        "skipped": len(manifest["skipped"]),
        "shards": len(manifest["shards"]),
        "cameras": sorted(manifest["cameras"]),
        "noop": noop,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """One line a person reads at the end of a run."""
    if summary["noop"]:
        return (
            f"{summary['output']}: complete already ({summary['pairs']} pairs, "
            f"{summary['shards']} shards); nothing to do"
        )
    return (
        f"{summary['output']}: {summary['pairs']} pairs in {summary['shards']} shards "
        f"({summary['pairs_written']} written now, {summary['mpix_written']:.1f} MPix, "
        f"{summary['pairs_per_s']:.2f} pairs/s over {summary['seconds']:.1f} s), "
        f"{summary['skipped']} skipped image(s), {_cameras_text(summary['cameras'])}"
    )


def _cameras_text(names: list[str], most: int = 6) -> str:
    if len(names) <= most:
        return f"cameras {', '.join(names)}"
    return f"{len(names)} cameras ({', '.join(names[:3])}, ...)"


def describe_dataset(data_dir: str | os.PathLike, top: int = 20) -> str:
    """What ``degtrans inspect DATASET`` prints: size, patch, shards, and pairs per camera."""
    manifest = read_manifest(data_dir)
    cameras = manifest["cameras"]
    config = manifest.get("config", {})
    lines = [
        f"{data_dir}: {manifest['samples']} pairs of {manifest['patch_size']}x{manifest['patch_size']} "
        f"in {len(manifest['shards'])} shards, {manifest.get('sources', '?')} images, "
        f"{len(cameras)} cameras ({config.get('camera_choice', 'all')}), "
        f"{len(manifest.get('skipped', []))} skipped image(s)",
        f"{'camera':<24}{'pairs':>8}{'share':>8}{'weight':>8}  frame",
    ]
    ranked = sorted(cameras.items(), key=lambda item: (-item[1].get("samples", 0), item[0]))
    total = max(1, manifest["samples"])
    for name, entry in ranked[:top]:
        count = entry.get("samples", 0)
        lines.append(
            f"{name:<24}{count:>8}{count / total:>8.1%}{entry.get('weight', 1.0):>8.3g}  "
            f"{entry['frame_h']}x{entry['frame_w']}"
        )
    if len(ranked) > top:
        rest = sum(entry.get("samples", 0) for _, entry in ranked[top:])
        lines.append(f"... {len(ranked) - top} more cameras with {rest} pairs")
    return "\n".join(lines)
