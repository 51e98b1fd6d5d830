"""A set of natural photographs made from Debian packages, on any machine that reaches a Debian archive.

What a machine needs: ``apt-get`` and ``dpkg-deb`` (Debian's ``apt`` and ``dpkg``, on every Debian or
Ubuntu system) and an apt source that lists the packages of :data:`PACKAGES` (Debian 12 "bookworm"
``main`` has all four: ``plasma-workspace-wallpapers``, ``mate-backgrounds``, ``lomiri-wallpapers-20.04``,
``opencv-doc``); no root, nothing is installed. Then one command: ``degtrans simulate make-photos``.

It fetches the packages with ``apt-get download``, unpacks them with ``dpkg-deb -x``, takes the
photographs :data:`PHOTOS` names (chosen by looking at them: no drawings, renders, logos or scans of
text), and writes each, area-averaged in linear light, into ``OUT/train`` or ``OUT/heldout`` as a
lossless 8-bit WebP (the whole set is about 32 MB), with ``OUT/manifest.json`` giving for every
photograph its package and version, the file in the package, the licence and copyright holders from the
package's ``copyright`` file, and its sizes.

Downscaling: the shorter side becomes ``short_side`` (1,024), and every photograph is reduced by at
least ``min_factor`` (1.5): averaging k×k pixels divides the noise by k and shrinks JPEG blocks and
ringing below a pixel or two, so the labels are sharp and clean as training needs. The small test
photographs (opencv-doc's, 400-900 px) are reduced less so that their shorter side stays at least
``min_short`` (384 px: a 256×384 frame still fits).

The split is fixed by name in :data:`PHOTOS` (a held-out scene is never cut into training frames):
tools take ``train`` photographs to train and ``heldout`` photographs to score.

Everything is cached: the ``.deb`` files and their unpacked trees under ``cache`` (default
``$DEGTRANS_CACHE`` or ``~/.cache/degtrans``, in ``debian/``), and a photograph already written with the
same settings (its checksum in the manifest) is kept, so a second run fetches and writes nothing.
The set's default folder is ``$DEGTRANS_PHOTOS`` or ``~/.cache/degtrans/photos``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from degtrans.atomic import write_atomic
from degtrans.errors import InputError, MissingInput
from degtrans.io import read_image, write_image

FORMAT = "degtrans-photos"
VERSION = 1
MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
SPLITS = ("train", "heldout")
Split = Literal["train", "heldout"]


@dataclass(frozen=True)
class Package:
    """A Debian package photographs are taken from.

    ``root``: the folder, inside the package, the photographs' ``file`` paths start from;
    ``upstream``: the same folder as the package's ``copyright`` file names it (its ``Files:``
    patterns are paths of the upstream source tree, not of the installed package).
    """

    name: str
    root: str
    upstream: str = ""


@dataclass(frozen=True)
class Photo:
    """One photograph: its ``name`` in the set (unique, also its file's stem), where it is, its split."""

    name: str
    package: str
    file: str
    split: Split


PACKAGES: tuple[Package, ...] = (
    Package("plasma-workspace-wallpapers", "usr/share/wallpapers"),
    Package("mate-backgrounds", "usr/share/backgrounds/mate"),
    Package("lomiri-wallpapers-20.04", "usr/share/backgrounds", "20.04"),
    Package("opencv-doc", "usr/share/doc/opencv-doc/examples/data", "samples/data"),
)


def _plasma(name: str, split: Split) -> Photo:
    file = f"{name}/contents/images/2560x1600.jpg"
    return Photo(f"plasma-{name.lower().replace('_', '-')}", "plasma-workspace-wallpapers", file, split)


def _mate(name: str, split: Split) -> Photo:
    return Photo(f"mate-{name.lower()}", "mate-backgrounds", f"nature/{name}.jpg", split)


def _opencv(file: str, split: Split) -> Photo:
    return Photo(f"opencv-{Path(file).stem.lower().replace('_', '-')}", "opencv-doc", file, split)


def _lomiri(file: str, split: Split) -> Photo:
    return Photo(f"lomiri-{file.split('_')[0].lower()}", "lomiri-wallpapers-20.04", file, split)


# Looked at one by one (2026-12): the packages' photographs only. Left out: plasma's drawings and
# renders (Altai, Autumn, Canopee, Cascade, Cluster, Elarun, Flow, FlyingKonqui, Honeywave, IceCold,
# Kay, Kokkini, MilkyWay, Opal, PastelHills, Patak, SafeLanding, Shell, Volna), mate's abstract and
# logo images, lomiri's drawings, ukui-wallpapers and gnome-backgrounds (drawings and renders only),
# and opencv's renders, drawings, text, chessboards, grey-level, blurred, logo-marked and grainy
# scanned images (apple, orange). The held-out ones cover each source's kinds of scene.
_CHOSEN = (  # (maker, split, names), in the set's order
    (_plasma, "train", "BytheWater ColdRipple DarkestHour FallenLeaf Kite OneStandsOut"),
    (_plasma, "heldout", "ColorfulCups EveningGlow Grey Path summer_1am"),
    (_mate, "train", "Aqua Blinds FreshFlower Garden GreenMeadow TwoWings Wood"),
    (_mate, "heldout", "Dune LadyBird RainDrops Storm YellowFlower"),
    (_lomiri, "train", "Kleiber_by_Lukas_Baubkus.jpg Infinite-Sea_by_Aury88.jpg"),
    (_opencv, "train", "aero1.jpg aloeL.jpg board.jpg butterfly.jpg ela_original.jpg graf1.png home.jpg"),
    (_opencv, "train", "rubberwhale1.png stuff.jpg"),
    (_opencv, "heldout", "aero3.jpg baboon.jpg building.jpg fruits.jpg leuvenA.jpg squirrel_cls.jpg"),
)
PHOTOS: tuple[Photo, ...] = tuple(make(n, split) for make, split, names in _CHOSEN for n in names.split())


def default_cache() -> Path:
    """``$DEGTRANS_CACHE`` or ``~/.cache/degtrans``: downloaded packages and their unpacked trees."""
    return Path(os.environ.get("DEGTRANS_CACHE") or Path.home() / ".cache" / "degtrans")


def default_photos() -> Path:
    """``$DEGTRANS_PHOTOS`` or ``~/.cache/degtrans/photos``: the photograph set's folder."""
    return Path(os.environ.get("DEGTRANS_PHOTOS") or Path.home() / ".cache" / "degtrans" / "photos")


# ---------------------------------------------------------------- Debian packages

Fetch = Callable[[str, Path], Path]


class FetchError(RuntimeError):
    """A package could not be fetched or unpacked (no apt-get or dpkg-deb, or the download failed)."""


def apt_download(package: str, folder: Path) -> Path:
    """``apt-get download PACKAGE`` into ``folder`` (nothing installed); returns the ``.deb``."""
    if shutil.which("apt-get") is None:
        raise FetchError(f"{package}: apt-get not found (the photograph set is made from Debian packages)")
    folder.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(["apt-get", "download", package], cwd=folder, capture_output=True, text=True)
    debs = sorted(folder.glob(f"{package}_*.deb"))
    if run.returncode != 0 or not debs:
        raise FetchError(f"{package}: apt-get download failed: {run.stderr.strip() or run.stdout.strip()}")
    return debs[-1]


def unpacked(package: str, cache: Path, fetch: Fetch = apt_download) -> tuple[Path, Path]:
    """The unpacked tree of ``package`` and its ``.deb``, fetched and unpacked once into ``cache/debian``."""
    debs = cache / "debian" / "debs"
    found = sorted(debs.glob(f"{package}_*.deb"))
    deb = found[-1] if found else fetch(package, debs)
    tree = cache / "debian" / "unpacked" / deb.stem
    if not (tree / ".complete").exists():
        if shutil.which("dpkg-deb") is None:
            raise FetchError(f"{deb}: dpkg-deb not found (needed to unpack the package)")
        tree.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=tree.parent, prefix=f".{deb.stem}."))
        try:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(work)], check=True, capture_output=True)
            (work / ".complete").write_text(deb.name)
            shutil.rmtree(tree, ignore_errors=True)
            work.rename(tree)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return tree, deb


@dataclass(frozen=True)
class Licence:
    """What a package's ``copyright`` file says of one file: its licence's short name and holders."""

    licence: str
    copyright: str


def copyright_stanzas(text: str) -> list[tuple[list[str], Licence]]:
    """The ``Files:`` stanzas of a machine-readable (DEP-5) ``copyright`` file, in order."""
    stanzas = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, list[str]] = {}
        key = None
        for line in block.split("\n"):
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key is not None:
                fields[key].append(line.strip())
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = [value.strip()] if value.strip() else []
        if "files" in fields and "license" in fields:
            patterns = " ".join(fields["files"]).split()
            holders = "; ".join(v for v in fields.get("copyright", []) if v and v != ".")
            stanzas.append((patterns, Licence(fields["license"][0], holders)))
    return stanzas


def licence_of(stanzas: Sequence[tuple[list[str], Licence]], path: str) -> Licence | None:
    """The licence of ``path`` (upstream tree): the last stanza whose pattern matches, as DEP-5 says."""
    found = None
    for patterns, licence in stanzas:
        # In DEP-5 ``*`` matches any characters, ``/`` included: fnmatchcase's rule.
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns):
            found = licence
    return found


def _kde_metadata(image: Path) -> dict[str, str]:
    """Author and licence a KDE wallpaper's ``metadata.json`` gives beside its ``contents/images``."""
    meta = image.parent.parent.parent / "metadata.json"
    if image.parent.parent.name != "contents" or not meta.is_file():
        return {}
    plugin = json.loads(meta.read_text()).get("KPlugin", {})
    authors = ", ".join(a.get("Name", "") for a in plugin.get("Authors", []))
    return {k: v for k, v in (("author", authors), ("author_licence", plugin.get("License", ""))) if v}


# ---------------------------------------------------------------- images


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """The sRGB transfer function undone (IEC 61966-2-1), values in [0, 1]."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """The sRGB transfer function, values in [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def reduced_size(
    height: int, width: int, short_side: int, min_factor: float, min_short: int = 0
) -> tuple[int, int]:
    """``(H, W)`` after downscaling: the shorter side to ``short_side``, and by at least ``min_factor``,
    but the shorter side not below ``min_short`` (nor the photograph enlarged)."""
    short = min(height, width)
    factor = min(max(min_factor, short / short_side), max(1.0, short / max(1, min_short)))
    return max(1, round(height / factor)), max(1, round(width / factor))


def downscale(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image (H, W, 3)`` sRGB in [0, 1] area-averaged to ``size = (h, w)`` in linear light (what a
    sensor of coarser pixels would record), back in sRGB."""
    import cv2

    linear = srgb_to_linear(np.asarray(image, np.float32))
    small = cv2.resize(linear, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return linear_to_srgb(small)


def cover_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The whole scene of ``image (H, W, 3)`` as one ``size = (h, w)`` frame: area-averaged (in linear
    light) until it just covers ``size``, then its centre cut out. Never enlarges.

    Raises:
        ValueError: the image is smaller than ``size`` in either direction at full scale.
    """
    height, width = image.shape[:2]
    scale = max(size[0] / height, size[1] / width)
    if scale > 1.0:
        raise ValueError(f"cover_crop: a {height}x{width} image cannot cover {size[0]}x{size[1]}")
    covered = (max(size[0], round(height * scale)), max(size[1], round(width * scale)))
    small = downscale(image, covered) if covered != (height, width) else np.asarray(image, np.float32)
    top, left = (covered[0] - size[0]) // 2, (covered[1] - size[1]) // 2
    return np.ascontiguousarray(small[top : top + size[0], left : left + size[1]])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- the set


def make_photo_set(
    output: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    photos: Sequence[Photo] = PHOTOS,
    packages: Sequence[Package] = PACKAGES,
    short_side: int = 1024,
    min_factor: float = 1.5,
    min_short: int = 384,
    fetch: Fetch = apt_download,
    progress: bool = True,
) -> dict[str, Any]:
    """Make (or bring up to date) the photograph set in ``output``; returns its manifest.

    Args:
        output: the set's folder (default :func:`default_photos`): ``train/``, ``heldout/``,
            ``manifest.json`` and ``_SUCCESS``.
        cache: downloaded and unpacked packages (default :func:`default_cache`).
        photos, packages: what to take and from where (default: the catalogue of this module).
        short_side: the shorter side of a written photograph in pixels, unless ``min_factor`` makes it
            smaller.
        min_factor: every photograph is reduced at least this much (noise and JPEG artefacts fall away)...
        min_short: ... unless that takes its shorter side below this (small photographs are reduced less,
            or not at all: 256x384 frames must still fit).
        fetch: ``fetch(package, folder) -> .deb`` (default ``apt-get download``).

    Raises:
        ValueError: naming the photograph, for a duplicate name, an unknown package or split, or a file
            the package does not hold.
    """
    from tqdm import tqdm

    out = Path(output) if output is not None else default_photos()
    cache = Path(cache) if cache is not None else default_cache()
    if short_side < 1 or min_factor < 1.0:
        raise InputError(f"--short-side must be >= 1 and --min-factor >= 1, got {short_side}, {min_factor}")
    by_name = {p.name: p for p in packages}
    names = [p.name for p in photos]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"photograph set: the name {duplicates[0]!r} is used twice")
    for photo in photos:
        if photo.package not in by_name:
            raise ValueError(f"{photo.name}: unknown package {photo.package!r}")
        if photo.split not in SPLITS:
            raise ValueError(f"{photo.name}: split must be one of {SPLITS}, got {photo.split!r}")
    settings = {"short_side": short_side, "min_factor": min_factor, "min_short": min_short}
    old = _read_manifest(out) if (out / MANIFEST).is_file() else {}
    kept = {e["name"]: e for e in old.get("photos", []) if old.get("settings") == settings}
    package_info: dict[str, dict[str, str]] = dict(old.get("packages", {})) if kept else {}
    trees: dict[str, tuple[Path, list[tuple[list[str], Licence]]]] = {}
    entries = []
    for photo in tqdm(photos, desc="photographs", unit="photo", disable=not progress):
        target = out / photo.split / f"{photo.name}.webp"
        previous = kept.get(photo.name)
        where = (photo.package, photo.file, photo.split)
        if (
            previous is not None
            and (previous["package"], previous["file"], previous["split"]) == where
            and target.is_file()
            and _sha256(target) == previous["sha256"]
        ):
            entries.append(previous)
            continue
        package = by_name[photo.package]
        if photo.package not in trees:
            tree, deb = unpacked(photo.package, cache, fetch)
            notice = tree / "usr" / "share" / "doc" / photo.package / "copyright"
            if not notice.is_file():
                raise ValueError(f"{photo.package}: the package has no copyright file ({notice})")
            trees[photo.package] = (tree, copyright_stanzas(notice.read_text(errors="replace")))
            version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True,
                                     check=True).stdout.strip()  # fmt: skip
            package_info[photo.package] = {"version": version, "deb": deb.name, "sha256": _sha256(deb)}
        tree, stanzas = trees[photo.package]
        source = tree / package.root / photo.file
        if not source.is_file():
            raise ValueError(f"{photo.name}: {photo.package} has no file {package.root}/{photo.file}")
        upstream = "/".join(part for part in (package.upstream, photo.file) if part)
        licence = licence_of(stanzas, upstream)
        if licence is None:
            raise ValueError(
                f"{photo.name}: the copyright file of {photo.package} names no licence for {upstream}"
            )
        image = read_image(source)
        size = reduced_size(*image.shape[:2], short_side, min_factor, min_short)
        write_image(target, downscale(image, size))
        entries.append({
            "name": photo.name, "split": photo.split, "path": f"{photo.split}/{photo.name}.webp",
            "package": photo.package, "version": package_info[photo.package]["version"], "file": photo.file,
            "source": f"{package.root}/{photo.file}", "licence": licence.licence,
            "copyright": licence.copyright, **_kde_metadata(source),
            "original_size": list(image.shape[:2]), "size": list(size),
            "factor": round(image.shape[0] / size[0], 3), "sha256": _sha256(target),
        })  # fmt: skip
    wanted = {e["path"] for e in entries}
    for split in SPLITS:  # photographs no longer in the catalogue, or moved to the other split
        for stale in (out / split).iterdir() if (out / split).is_dir() else ():
            if f"{split}/{stale.name}" not in wanted:
                stale.unlink()
    used = {e["package"] for e in entries}
    manifest = {
        "format": FORMAT, "version": VERSION, "settings": settings,
        "packages": {k: v for k, v in sorted(package_info.items()) if k in used},
        "counts": {s: sum(e["split"] == s for e in entries) for s in SPLITS}, "photos": entries,
    }  # fmt: skip
    (out / SUCCESS).unlink(missing_ok=True)
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
    write_atomic(out / SUCCESS, "")
    return manifest


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: cannot read the photograph set's manifest: {error}") from error
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise InputError(f"{path}: not a photograph set of version {VERSION} ({FORMAT})")
    return manifest


def read_photo_set(folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest of a finished photograph set (default folder :func:`default_photos`).

    Raises:
        MissingInput: the set is not there (or unfinished): run ``degtrans simulate make-photos``.
        InputError: the manifest is unreadable or of another format.
    """
    folder = Path(folder) if folder is not None else default_photos()
    if not (folder / SUCCESS).exists() or not (folder / MANIFEST).exists():
        raise MissingInput(
            f"{folder}: no photograph set there; make it with 'degtrans simulate make-photos -o {folder}'"
        )
    return _read_manifest(folder)


def photo_paths(folder: str | os.PathLike | None = None, split: Split = "train") -> list[Path]:
    """The image files of one split of a photograph set, sorted by name."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder = Path(folder) if folder is not None else default_photos()
    manifest = read_photo_set(folder)
    paths = [folder / e["path"] for e in manifest["photos"] if e["split"] == split]
    if missing := [p for p in paths if not p.is_file()]:
        raise MissingInput(f"{missing[0]}: listed in {folder / MANIFEST} but missing; rerun make-photos")
    return sorted(paths, key=lambda p: p.name)
