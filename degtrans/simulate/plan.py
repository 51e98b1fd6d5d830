"""The plan of a dataset: its cameras (PSF field + profile), every sample id, and fixed shards.

The full list of ``sample_id``s is planned up front and cut into fixed shards, so a pair depends only on
``(seed, sample_id)`` and the plan's fingerprint names the inputs and settings its pixels depend on.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from degtrans.config import SimulateConfig, to_dict
from degtrans.field import PSFField
from degtrans.pairs import FORMAT_VERSION, file_sha256, shard_path
from degtrans.simulate.camera import load_profile
from degtrans.simulate.sources import Source

DEFAULT_PROFILE = "canon-eos-5d-mark-ii"


@dataclass(frozen=True)
class Camera:
    """A virtual camera of the dataset: PSF field file and profile."""

    name: str
    field_path: str
    field_sha256: str
    profile: dict[str, Any]


@dataclass(frozen=True)
class ShardSpec:
    """Everything a worker needs to write one shard; picklable, no open files."""

    index: int
    output: str
    samples: tuple[tuple[str, int, int, int], ...]
    sources: tuple[Source, ...]
    cameras: tuple[Camera, ...]
    settings: dict[str, Any]
    fingerprint: str

    @property
    def path(self) -> Path:
        return shard_path(self.output, self.index)


def resolve_cameras(
    fields: Sequence[str | os.PathLike], profiles: Sequence[str | os.PathLike] | None
) -> tuple[list[Camera], dict[str, PSFField]]:
    """Cameras named after their field files; profile per field (one for all, or from the field's meta)."""
    if not fields:
        raise ValueError("--psf: give at least one PSF field (.npz)")
    if profiles and len(profiles) not in (1, len(fields)):
        raise ValueError(
            f"--profile: give one profile, or one per --psf ({len(fields)}), got {len(profiles)}"
        )
    cameras, loaded = [], {}
    for i, path in enumerate(fields):
        psf_field = PSFField.load(path)
        if psf_field.psfs.shape[2] != 3:
            raise ValueError(
                f"{path}: the simulation needs an RGB field, got {psf_field.psfs.shape[2]} channels"
            )
        name = Path(path).stem
        if name in loaded:
            raise ValueError(f"--psf: two fields are named {name!r} (camera names come from the file names)")
        choice = (
            profiles[i if len(profiles) > 1 else 0]
            if profiles
            else psf_field.meta.get("profile", DEFAULT_PROFILE)
        )
        profile = load_profile(choice)
        cameras.append(Camera(name, str(Path(path).resolve()), file_sha256(path), profile.to_dict()))
        loaded[name] = psf_field
    return cameras, loaded


def check_frames(
    sources: Sequence[Source], cameras: Sequence[Camera], fields: dict[str, PSFField], config: SimulateConfig
) -> None:
    """Patch size fits every image; every field fits every frame unless ``fit_field``."""
    if config.patch_size < 1 or config.patches_per_image < 1:
        raise ValueError(
            f"simulate: patch_size and patches_per_image must be positive, got {config.patch_size}, "
            f"{config.patches_per_image}"
        )
    for source in sources:
        where = source.where
        if config.patch_size > min(source.height, source.width):
            raise ValueError(
                f"{where}: patch size {config.patch_size} is larger than the image "
                f"({source.height}x{source.width})"
            )
        if config.fit_field:
            continue
        for camera in cameras:
            size = fields[camera.name].image_size
            if size != (source.height, source.width):
                raise ValueError(
                    f"{where}: frame {source.height}x{source.width} does not match "
                    f"the PSF field {camera.field_path} "
                    f"(made for {size[0]}x{size[1]}); pass --fit-field to stretch the field over the frame"
                )


def plan_samples(
    sources: Sequence[Source], cameras: Sequence[Camera], patches_per_image: int
) -> list[tuple[str, int, int, int]]:
    """Every ``(sample_id, source index, camera index, patch)``, in a fixed order."""
    return [
        (f"{camera.name}/{source.name}/p{p:02d}", s, c, p)
        for s, source in enumerate(sources)
        for c, camera in enumerate(cameras)
        for p in range(patches_per_image)
    ]


def shard_settings(config: SimulateConfig) -> dict[str, Any]:
    """What the pixels depend on (``workers`` does not)."""
    settings = to_dict(config)
    settings.pop("workers", None)
    return settings


def fingerprint(settings: dict[str, Any], sources: Sequence[Source], cameras: Sequence[Camera]) -> str:
    payload = {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "sources": [[s.name, s.height, s.width] for s in sources],
        "cameras": [[c.name, c.field_sha256, c.profile] for c in cameras],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan_shards(
    output: Path, sources: Sequence[Source], cameras: Sequence[Camera], config: SimulateConfig
) -> list[ShardSpec]:
    """Fixed shards of ``rows_per_file`` consecutive samples; each carries only the sources it uses."""
    if config.rows_per_file < 1 or config.patches_per_image < 1:
        raise ValueError("simulate: rows_per_file and patches_per_image must be positive")
    settings = shard_settings(config)
    print_ = fingerprint(settings, sources, cameras)
    samples = plan_samples(sources, cameras, config.patches_per_image)
    specs = []
    for index, start in enumerate(range(0, len(samples), config.rows_per_file)):
        chunk = samples[start : start + config.rows_per_file]
        used = sorted({s for _, s, _, _ in chunk})
        remap = {s: i for i, s in enumerate(used)}
        specs.append(
            ShardSpec(
                index=index,
                output=str(output),
                samples=tuple((sid, remap[s], c, p) for sid, s, c, p in chunk),
                sources=tuple(sources[s] for s in used),
                cameras=tuple(cameras),
                settings=settings,
                fingerprint=print_,
            )
        )
    return specs
