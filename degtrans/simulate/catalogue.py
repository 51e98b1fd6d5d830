"""Camera catalogues: any number of cameras, each a PSF field, an optional profile and a sampling weight.

A catalogue is a TOML file::

    [[camera]]
    field = "lens-0001.npz"        # relative to the TOML file's folder
    name = "phone-a"               # optional: default the field's file name without .npz
    profile = "sony-rx100m4"       # optional: bundled name, .toml or RAW file; default the field's meta
    weight = 2.0                   # optional: relative sampling weight, default 1

or a directory: its ``cameras.toml`` if there is one, else every ``*.npz`` in it (weight 1, profile
from the field). ``write_random_cameras`` writes such a directory of seeded virtual lenses.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from degtrans.errors import InputError, MissingInput

CATALOGUE_FILE = "cameras.toml"
ENTRY_KEYS = ("field", "name", "profile", "weight")


@dataclass(frozen=True)
class CameraEntry:
    """One camera of a catalogue: its PSF field file, profile (``None``: the field's) and weight."""

    name: str
    field: Path
    profile: str | None = None
    weight: float = 1.0


def fields_as_entries(
    fields: Sequence[str | os.PathLike], profiles: Sequence[str | os.PathLike] | None = None
) -> list[CameraEntry]:
    """``--psf`` files (and ``--profile``: one for all, or one per field) as catalogue entries."""
    if not fields:
        raise InputError("--psf: give at least one PSF field (.npz), or a catalogue with --cameras")
    if profiles and len(profiles) not in (1, len(fields)):
        raise InputError(
            f"--profile: give one profile, or one per --psf ({len(fields)}), got {len(profiles)}"
        )
    entries = []
    for i, path in enumerate(fields):
        profile = str(profiles[i if len(profiles) > 1 else 0]) if profiles else None
        entries.append(CameraEntry(Path(path).stem, Path(path), profile))
    return entries


def load_catalogue(path: str | os.PathLike) -> list[CameraEntry]:
    """The cameras of a catalogue TOML file or directory (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        if (path / CATALOGUE_FILE).is_file():
            return load_catalogue(path / CATALOGUE_FILE)
        fields = sorted(path.glob("*.npz"))
        if not fields:
            raise InputError(f"--cameras: {path} holds neither {CATALOGUE_FILE} nor any *.npz field")
        return [CameraEntry(f.stem, f) for f in fields]
    if not path.is_file():
        raise InputError(f"--cameras: {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a valid TOML catalogue: {error}") from error
    if unknown := sorted(set(data) - {"camera"}):
        raise InputError(f"{path}: unknown top-level key {unknown[0]!r} (expected [[camera]] tables)")
    tables = data.get("camera")
    if not isinstance(tables, list) or not tables:
        raise InputError(f"{path}: no cameras (expected one [[camera]] table per camera)")
    entries = [_entry(path, i, table) for i, table in enumerate(tables)]
    names = [e.name for e in entries]
    if (repeated := next((n for n in names if names.count(n) > 1), None)) is not None:
        raise InputError(f"{path}: two cameras are named {repeated!r} (names must be unique)")
    return entries


def _entry(path: Path, index: int, table: object) -> CameraEntry:
    where = f"{path}: camera[{index}]"
    if not isinstance(table, dict):
        raise InputError(f"{where}: expected a table with field, name, profile, weight")
    if unknown := sorted(set(table) - set(ENTRY_KEYS)):
        raise InputError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(ENTRY_KEYS)})")
    if not isinstance(table.get("field"), str):
        raise InputError(f"{where}: 'field' (the PSF field .npz, relative to the catalogue) is required")
    field = Path(table["field"])
    field = field if field.is_absolute() else path.parent / field
    name = table.get("name", field.stem)
    where = f"{path}: camera[{index}] ({name!r})"
    if not isinstance(name, str) or not name or "/" in name:
        raise InputError(f"{where}: 'name' must be a non-empty string without '/'")
    if not field.is_file():
        raise MissingInput(f"{where}: field {field} does not exist")
    profile = table.get("profile")
    if profile is not None and not isinstance(profile, str):
        raise InputError(f"{where}: 'profile' must be a string (bundled name or file), got {profile!r}")
    weight = table.get("weight", 1.0)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not (math.isfinite(weight) and weight > 0)
    ):
        raise InputError(f"{where}: 'weight' must be a positive number, got {weight!r}")
    if profile is not None and not Path(profile).is_absolute() and (path.parent / profile).is_file():
        profile = str(path.parent / profile)
    return CameraEntry(name, field, profile, float(weight))


def write_random_cameras(
    directory: str | os.PathLike,
    count: int,
    seed: int = 0,
    grid: tuple[int, int] = (6, 8),
    psf_size: int = 31,
    image_size: tuple[int, int] = (256, 384),
    profile: str | None = None,
    workers: int = 1,
) -> list[Path]:
    """``count`` distinct seeded virtual lenses as ``directory/lens-NNNN.npz`` plus a ``cameras.toml``.

    Lens ``i`` is ``random_lens(seed * 1_000_003 + i)``: the same ``(seed, i)`` always gives the same lens,
    and a larger ``count`` extends a smaller one. Existing fields are kept (a rerun only adds).
    ``workers`` > 1 writes the missing ones in that many spawned processes.
    """
    from degtrans.atomic import write_atomic

    if count < 1:
        raise InputError(f"--count: expected >= 1, got {count}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(count - 1)))
    paths = [directory / f"lens-{i:0{width}d}.npz" for i in range(count)]
    jobs = [(seed * 1_000_003 + i, p, grid, psf_size, image_size, profile) for i, p in enumerate(paths)]
    jobs = [job for job in jobs if not job[1].exists()]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # Spawned, not forked: a fork after torch has run can hang.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_write_lens, jobs))
    else:
        for job in jobs:
            _write_lens(job)
    lines = [f'[[camera]]\nfield = "{p.name}"\n' for p in paths]
    write_atomic(directory / CATALOGUE_FILE, "\n".join(lines))
    return paths


def _write_lens(job: tuple) -> Path:
    """Write one random lens's field: ``(lens seed, path, grid, psf_size, image_size, profile)``."""
    from degtrans.simulate.optics import lens_field, random_lens

    lens_seed, target, grid, psf_size, image_size, profile = job
    spec = random_lens(lens_seed, name=target.stem)
    return lens_field(grid, psf_size, image_size, spec, camera=target.stem, profile=profile).save(target)
