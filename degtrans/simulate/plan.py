"""The plan of a dataset: its cameras (PSF field + profile + weight), every sample id, and fixed shards.

The full list of ``sample_id``s is planned up front and cut into fixed shards, so a pair depends only on
``(seed, sample_id)`` and the plan's fingerprint names the inputs and settings its pixels depend on.
With ``camera_choice = "draw"`` each image x patch draws its camera from ``(seed, sample_id)`` by weight;
a shard carries only the cameras and sources its samples use, so its cost does not grow with the
size of the catalogue.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from degtrans.config import SimulateConfig, to_dict
from degtrans.errors import InputError
from degtrans.field import PSFField
from degtrans.pairs import FORMAT_VERSION, file_sha256, shard_path
from degtrans.simulate.camera import load_profile
from degtrans.simulate.catalogue import CameraEntry
from degtrans.simulate.degrade import PairSettings
from degtrans.simulate.sources import Source

DEFAULT_PROFILE = "canon-eos-5d-mark-ii"


@dataclass(frozen=True)
class Camera:
    """A virtual camera of the dataset: PSF field file, profile, sampling weight, the field's frame."""

    name: str
    field_path: str
    field_sha256: str
    profile: dict[str, Any]
    weight: float = 1.0
    frame: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class ShardSpec:
    """Everything a worker needs to write one shard; picklable, no open files.

    ``settings``: how each pair is drawn, developed and stored; ``fit_field`` and ``row_group_rows``:
    the ``[simulate]`` fields of the same names.
    """

    index: int
    output: str
    samples: tuple[tuple[str, int, int, int], ...]
    sources: tuple[Source, ...]
    cameras: tuple[Camera, ...]
    settings: PairSettings
    fit_field: bool
    row_group_rows: int
    fingerprint: str

    @property
    def path(self) -> Path:
        return shard_path(self.output, self.index)


def resolve_cameras(entries: Sequence[CameraEntry]) -> list[Camera]:
    """Check every camera's field (RGB, readable) and profile once; names must be unique.

    Args:
        entries: from ``fields_as_entries`` (``--psf``) or ``load_catalogue`` (``--cameras``).
    """
    if not entries:
        raise InputError("simulate: no cameras (give --psf or --cameras)")
    cameras: list[Camera] = []
    seen: set[str] = set()
    profiles: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if entry.name in seen:
            raise InputError(f"{entry.field}: two cameras are named {entry.name!r} (names must be unique)")
        seen.add(entry.name)
        try:
            psf_field = PSFField.load(entry.field)
        except (OSError, ValueError, KeyError) as error:
            raise InputError(
                f"{entry.field}: cannot read the PSF field of camera {entry.name!r}: {error}"
            ) from error
        if psf_field.psfs.shape[2] != 3:
            raise InputError(
                f"{entry.field}: the simulation needs an RGB field, got {psf_field.psfs.shape[2]} channels"
            )
        choice = entry.profile or psf_field.meta.get("profile", DEFAULT_PROFILE)
        if choice not in profiles:  # hundreds of cameras often share a few profiles
            profiles[choice] = load_profile(choice).to_dict()
        cameras.append(
            Camera(entry.name, str(Path(entry.field).resolve()), file_sha256(entry.field), profiles[choice],
                   entry.weight, psf_field.image_size)
        )  # fmt: skip
    return cameras


def check_frames(sources: Sequence[Source], cameras: Sequence[Camera], config: SimulateConfig) -> None:
    """Patch size fits every image; every field fits every frame unless ``fit_field``."""
    if config.patch_size < 1 or config.patches_per_image < 1:
        raise InputError(
            f"simulate.patch_size and simulate.patches_per_image must be positive, got {config.patch_size}, "
            f"{config.patches_per_image}"
        )
    for source in sources:
        where = source.where
        if config.patch_size > min(source.height, source.width):
            raise InputError(
                f"{where}: patch size {config.patch_size} (simulate.patch_size) is larger than the image "
                f"({source.height}x{source.width})"
            )
        if config.fit_field:
            continue
        for camera in cameras:
            size = camera.frame
            if size != (source.height, source.width):
                raise InputError(
                    f"{where}: frame {source.height}x{source.width} does not match "
                    f"the PSF field {camera.field_path} "
                    f"(made for {size[0]}x{size[1]}); pass --fit-field to stretch the field over the frame"
                )


def draw_camera(seed: int, sample_id: str, cumulative: Sequence[float]) -> int:
    """The camera index a sample draws: weight-proportional, depends only on ``(seed, sample_id)``.

    Args:
        cumulative: running sums of the cameras' weights (the last is the total).
    """
    digest = hashlib.sha256(f"{seed}:{sample_id}:camera".encode()).digest()
    u = int.from_bytes(digest[:8], "little") / 2**64 * cumulative[-1]
    return min(bisect.bisect_right(cumulative, u), len(cumulative) - 1)


def plan_samples(
    sources: Sequence[Source], cameras: Sequence[Camera], patches_per_image: int,
    camera_choice: str = "all", seed: int = 0,
) -> list[tuple[str, int, int, int]]:  # fmt: skip
    """Every ``(sample_id, source index, camera index, patch)``, in a fixed order.

    ``"draw"``: one per image and patch (``IMAGE/pNN``), its camera drawn by ``draw_camera``; otherwise
    (``"all"``) one per image, camera and patch (``CAMERA/IMAGE/pNN``).
    """
    if camera_choice != "draw":
        return [
            (f"{camera.name}/{source.name}/p{p:02d}", s, c, p)
            for s, source in enumerate(sources)
            for c, camera in enumerate(cameras)
            for p in range(patches_per_image)
        ]
    cumulative = list(itertools.accumulate(c.weight for c in cameras))
    samples = []
    for s, source in enumerate(sources):
        for p in range(patches_per_image):
            sample_id = f"{source.name}/p{p:02d}"
            samples.append((sample_id, s, draw_camera(seed, sample_id, cumulative), p))
    return samples


def fingerprint(config: SimulateConfig, sources: Sequence[Source], cameras: Sequence[Camera]) -> str:
    """The plan's identity: the format, the config (less ``workers``, which the pixels do not depend on,
    and ``gpus_per_worker``, which they do only within kernel tolerance), the sources and the cameras."""
    settings = to_dict(config)
    settings.pop("workers", None)
    settings.pop("gpus_per_worker", None)
    payload = {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "sources": [[s.name, s.height, s.width] for s in sources],
        "cameras": [[c.name, c.field_sha256, c.profile, c.weight] for c in cameras],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan_shards(
    output: Path, sources: Sequence[Source], cameras: Sequence[Camera], config: SimulateConfig
) -> list[ShardSpec]:
    """Fixed shards of ``rows_per_file`` consecutive samples; each carries only the sources it uses."""
    if config.rows_per_file < 1 or config.patches_per_image < 1:
        raise InputError("simulate.rows_per_file and simulate.patches_per_image must be positive")
    settings = PairSettings.of(config)
    print_ = fingerprint(config, sources, cameras)
    samples = plan_samples(sources, cameras, config.patches_per_image, config.camera_choice, config.seed)
    specs = []
    for index, start in enumerate(range(0, len(samples), config.rows_per_file)):
        chunk = samples[start : start + config.rows_per_file]
        used = sorted({s for _, s, _, _ in chunk})
        used_cameras = sorted({c for _, _, c, _ in chunk})
        remap = {s: i for i, s in enumerate(used)}
        remap_camera = {c: i for i, c in enumerate(used_cameras)}
        specs.append(
            ShardSpec(
                index=index,
                output=str(output),
                samples=tuple((sid, remap[s], remap_camera[c], p) for sid, s, c, p in chunk),
                sources=tuple(sources[s] for s in used),
                cameras=tuple(cameras[c] for c in used_cameras),
                settings=settings,
                fit_field=config.fit_field,
                row_group_rows=config.row_group_rows,
                fingerprint=print_,
            )
        )
    return specs
