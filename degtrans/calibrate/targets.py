"""Calibration targets: images whose spectrum covers every frequency, so the inverse problem is well posed.

Kinds (``degtrans calibrate make-targets``):

- ``calib``: the calibration chart. ArUco markers on the border (large cells, so detection and their
  centres survive a 30-px blur) give the coarse geometry and the chart's identity; a block of flat
  grey and colour patches (a grey ramp and saturated colours) gives stage I its tone and colour;
  broadband noise up to ``band_limit`` (in each axis) fills the rest. A sidecar JSON beside the PNG
  describes the layout (:class:`Layout`).
- ``noise``: random-phase noise with a nearly white spectrum up to ``band_limit`` in each axis. As the
  second pattern of a pose (``per_pose``) it shares the chart's geometry: a rig shows several patterns
  without moving, so one registration serves them all (``geometry_from`` in its sidecar).
- ``edges``: anti-aliased slanted-edge squares (ISO 12233 style, 5 degrees) over a noise background.
- ``checker``: a checkerboard with random disc markers.

Coordinates in the sidecar follow OpenCV: pixel centres at integers, ``(x, y)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from degtrans.atomic import write_atomic
from degtrans.errors import InputError
from degtrans.io import write_image

TargetKind = Literal["calib", "noise", "edges", "checker"]
KINDS: tuple[TargetKind, ...] = ("calib", "noise", "edges", "checker")
# Default roll-off (cycles/target pixel, in each axis) of the noise: the target's own Nyquist, where
# the amplitude is down to 1/e. The sensor's Nyquist is 0.5 cycles/photo pixel: the content reaches it
# only when a target pixel covers less than one photo pixel (make targets larger than the photo's
# frame, e.g. 1.25x: docs/calibration.md). Measured on the demo's undersampled phone lens (3x4, k = 15,
# 256x384, targets 1.25x the frame): mean pixel error 0.088 with 0.5, 0.106 with 0.45.
BAND_LIMIT = 0.5
ARUCO_DICTIONARY = "DICT_4X4_1000"
MARKERS_PER_CHART = 8
# Grey ramp (8 levels) and 8 colours: enough levels to see a tone curve's bend, enough hues for the
# 3x3 matrix. Values stay inside [0.05, 0.9] so a camera with a black offset does not clip them.
GREY_LEVELS = tuple(float(v) for v in np.round(np.linspace(0.05, 0.9, 8), 4))
COLOURS = (
    (0.85, 0.1, 0.1),
    (0.1, 0.8, 0.1),
    (0.1, 0.15, 0.85),
    (0.1, 0.75, 0.8),
    (0.8, 0.1, 0.75),
    (0.85, 0.8, 0.1),
    (0.6, 0.35, 0.2),
    (0.3, 0.5, 0.7),
)
INK, PAPER = 0.08, 0.88


@dataclass(frozen=True)
class Marker:
    """One ArUco marker: ``id`` in ``ARUCO_DICTIONARY``, ``corners`` (4, 2) TL, TR, BR, BL in (x, y)."""

    id: int
    corners: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Patch:
    """A flat patch: ``rect`` (x0, y0, x1, y1) half-open pixel bounds, ``rgb`` its target value."""

    rect: tuple[int, int, int, int]
    rgb: tuple[float, float, float]


@dataclass(frozen=True)
class Layout:
    """What a target shows, for registration and stage I (the sidecar ``NAME.json`` of ``NAME.png``).

    Attributes:
        kind: the target's kind.
        size: (H, W) in pixels.
        pose: poses share one camera position; patterns of one pose share one geometry.
        geometry_from: the target (file stem) whose photo registers this pose; ``None`` for itself.
        markers / patches: the chart's fiducials and flat patches (empty for other kinds).
        band_limit: roll-off of the broadband content, cycles/pixel.
    """

    kind: str
    size: tuple[int, int]
    pose: int = 0
    geometry_from: str | None = None
    dictionary: str = ARUCO_DICTIONARY
    markers: tuple[Marker, ...] = ()
    patches: tuple[Patch, ...] = ()
    band_limit: float = BAND_LIMIT
    version: int = 1

    @classmethod
    def from_dict(cls, data: dict) -> Layout:
        return cls(
            kind=str(data["kind"]),
            size=tuple(int(v) for v in data["size"]),
            pose=int(data.get("pose", 0)),
            geometry_from=data.get("geometry_from"),
            dictionary=str(data.get("dictionary", ARUCO_DICTIONARY)),
            markers=tuple(
                Marker(int(m["id"]), tuple(tuple(float(v) for v in c) for c in m["corners"]))
                for m in data.get("markers", ())
            ),
            patches=tuple(
                Patch(tuple(int(v) for v in p["rect"]), tuple(float(v) for v in p["rgb"]))
                for p in data.get("patches", ())
            ),
            band_limit=float(data.get("band_limit", BAND_LIMIT)),
            version=int(data.get("version", 1)),
        )


def sidecar_path(image_path: str | Path) -> Path:
    """The layout file of a target image: ``NAME.json`` beside ``NAME.png``."""
    return Path(image_path).with_suffix(".json")


def read_layout(image_path: str | Path) -> Layout | None:
    """The target's layout, or ``None`` when it has no sidecar (targets made elsewhere)."""
    path = sidecar_path(image_path)
    if not path.is_file():
        return None
    try:
        return Layout.from_dict(json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: not a target layout: {error}") from error


def random_phase_noise(
    size: tuple[int, int], rng: np.random.Generator, channels: int = 3, band_limit: float = BAND_LIMIT
) -> np.ndarray:
    """(H, W, C) float32 in [0, 1]: nearly white spectrum, random phase, cut off at ``band_limit`` in
    each axis (a square band)."""
    height, width = size
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.hypot(fy, fx)
    # A nearly white spectrum (f^-0.3) keeps the high frequencies that identify a narrow PSF, while
    # the gentle tilt keeps some low-frequency colour variation.
    amplitude = np.maximum(radius, 1.0 / max(height, width)) ** -0.3
    # The roll-off is separable, not radial: a PSF on the pixel grid has a spectrum on the whole square
    # |fx|, |fy| <= 0.5, and a radial band leaves its corners (36 % of it) unseen. For the undersampled
    # phone-wide lens at 256x384 that alone made a floor of 0.29 (pixel relative L2).
    amplitude *= np.exp(-((np.abs(fx) / band_limit) ** 8) - (np.abs(fy) / band_limit) ** 8)
    amplitude[0, 0] = 0.0
    out = np.empty((height, width, channels), dtype=np.float64)
    for ch in range(channels):
        phase = rng.uniform(0.0, 2 * np.pi, size=amplitude.shape)
        image = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(height, width))
        lo, hi = np.percentile(image, [0.5, 99.5])
        out[..., ch] = np.clip(0.08 + 0.84 * (image - lo) / (hi - lo), 0.0, 1.0)
    return out.astype(np.float32)


def _supersampled(size: tuple[int, int], factor: int, draw) -> np.ndarray:
    """Area-average a drawing made on a ``factor``-times finer grid: edges come out anti-aliased."""
    height, width = size
    yy, xx = np.mgrid[0 : height * factor, 0 : width * factor].astype(np.float64)
    fine = draw((yy + 0.5) / factor, (xx + 0.5) / factor)
    return fine.reshape(height, factor, width, factor).mean(axis=(1, 3))


def slanted_edges(
    size: tuple[int, int], rng: np.random.Generator, band_limit: float = BAND_LIMIT
) -> np.ndarray:
    """(H, W, 3) float32: slanted dark/bright squares (5 degrees) over low-contrast noise."""
    height, width = size
    background = 0.5 + 0.35 * (random_phase_noise(size, rng, band_limit=band_limit) - 0.5)
    side = max(8, min(height, width) // 5)
    angle = np.deg2rad(5.0)
    cos, sin = np.cos(angle), np.sin(angle)
    centres = [
        (y, x)
        for y in np.arange(side, height - side // 2, 1.6 * side)
        for x in np.arange(side, width - side // 2, 1.6 * side)
    ]

    def draw(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        inside = np.zeros_like(yy)
        for y, x in centres:
            u = cos * (xx - x) + sin * (yy - y)
            v = -sin * (xx - x) + cos * (yy - y)
            inside = np.maximum(inside, ((np.abs(u) < side / 2) & (np.abs(v) < side / 2)).astype(np.float64))
        return inside

    squares = _supersampled(size, 4, draw)[..., None]
    levels = rng.uniform(0.05, 0.95, size=3)
    return (background * (1 - squares) + levels * squares).astype(np.float32)


def checker_markers(
    size: tuple[int, int], rng: np.random.Generator, band_limit: float = BAND_LIMIT
) -> np.ndarray:
    """(H, W, 3) float32: a checkerboard with random coloured disc markers (``band_limit`` unused)."""
    height, width = size
    cell = max(6, min(height, width) // 12)
    n_markers = max(4, (height * width) // (cell * cell * 6))
    centres = rng.uniform(0, 1, size=(n_markers, 2)) * np.array([height, width])
    radii = rng.uniform(0.2, 0.45, size=n_markers) * cell

    def board(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return ((np.floor(yy / cell) + np.floor(xx / cell)) % 2).astype(np.float64)

    def discs(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        index = np.full(yy.shape, -1.0)
        for i, ((y, x), r) in enumerate(zip(centres, radii, strict=True)):
            index[(yy - y) ** 2 + (xx - x) ** 2 < r * r] = i
        return index

    base = 0.15 + 0.7 * _supersampled(size, 4, board)
    image = np.repeat(base[..., None], 3, axis=-1)
    colours = rng.uniform(0.05, 0.95, size=(n_markers, 3))
    for i in range(n_markers):
        cover = _supersampled(size, 4, lambda yy, xx, i=i: (discs(yy, xx) == i).astype(np.float64))[..., None]
        image = image * (1 - cover) + colours[i] * cover
    return image.astype(np.float32)


def chart_layout(size: tuple[int, int], pose: int = 0, band_limit: float = BAND_LIMIT) -> Layout:
    """Where the calibration chart puts its markers and patches for a ``size`` (H, W) target.

    Markers: 8 (corners and edge midpoints), inset 6 % so that a photo framing the chart with a small
    margin still sees them, cells of ~1/42 of the short side (12 px at 512) with a one-cell quiet zone.
    Patches: the grey ramp then the colours, as large squares as fit the area inside the markers.
    """
    height, width = size
    cell = max(4, round(min(height, width) / 42))
    side, quiet = 6 * cell, cell
    inset = round(0.06 * min(height, width))
    outer = side + 2 * quiet
    xs = (inset + quiet, (width - side) // 2, width - inset - quiet - side)
    ys = (inset + quiet, (height - side) // 2, height - inset - quiet - side)
    positions = [(x, y) for y in ys for x in xs if (x, y) != (xs[1], ys[1])]
    corners = ((0, 0), (side, 0), (side, side), (0, side))  # TL, TR, BR, BL
    markers = tuple(
        Marker(pose * MARKERS_PER_CHART + j, tuple((x + dx - 0.5, y + dy - 0.5) for dx, dy in corners))
        for j, (x, y) in enumerate(positions)
    )
    # The patch block fills the box inside the marker ring.
    x0, x1 = inset + outer + quiet, width - inset - outer - quiet
    y0, y1 = inset + outer + quiet, height - inset - outer - quiet
    values = [(g, g, g) for g in GREY_LEVELS] + list(COLOURS)
    best = (0, 1, len(values))
    for rows in range(1, len(values) + 1):
        cols = -(-len(values) // rows)
        p = min((y1 - y0) // rows, (x1 - x0) // cols)
        if p > best[0]:
            best = (p, rows, cols)
    p, rows, cols = best
    if p < 4:
        raise InputError(f"chart_layout: size {size} leaves no room for patches; use at least --size 128x128")
    by, bx = y0 + ((y1 - y0) - rows * p) // 2, x0 + ((x1 - x0) - cols * p) // 2
    patches = []
    for i, rgb in enumerate(values):
        x, y = bx + (i % cols) * p, by + (i // cols) * p
        patches.append(Patch((x, y, x + p, y + p), rgb))
    return Layout(
        "calib", (height, width), pose=pose, markers=markers, patches=tuple(patches), band_limit=band_limit
    )


def aruco_dictionary(name: str = ARUCO_DICTIONARY):
    return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))


def draw_chart(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32: the chart of ``layout`` over broadband noise."""
    image = random_phase_noise(layout.size, rng, band_limit=layout.band_limit)
    dictionary = aruco_dictionary(layout.dictionary)
    for marker in layout.markers:
        (x0, y0), (x1, _), _, _ = marker.corners
        x, y, side = round(x0 + 0.5), round(y0 + 0.5), round(x1 - x0)
        quiet = side // 6
        image[y - quiet : y + side + quiet, x - quiet : x + side + quiet] = PAPER
        bits = cv2.aruco.generateImageMarker(dictionary, marker.id, side, borderBits=1)
        image[y : y + side, x : x + side] = np.where(bits[..., None] > 127, PAPER, INK)
    for patch in layout.patches:
        x0, y0, x1, y1 = patch.rect
        image[y0:y1, x0:x1] = patch.rgb
    return image.astype(np.float32)


GENERATORS = {"noise": random_phase_noise, "edges": slanted_edges, "checker": checker_markers}


def make_target(
    kind: TargetKind, size: tuple[int, int], seed: int = 0, pose: int = 0, band_limit: float = BAND_LIMIT
) -> tuple[np.ndarray, Layout]:
    """One target ``(H, W, 3)`` float32 in [0, 1] of ``kind`` and its layout."""
    if kind not in KINDS:
        raise InputError(f"make_target: kind (--kinds) must be one of {list(KINDS)}, got {kind!r}")
    if min(size) < 16:
        raise InputError(f"make_target: size must be at least 16x16, got {size}")
    if not 0.05 <= band_limit <= 0.5:
        raise InputError(f"make_target: band_limit must be in [0.05, 0.5] cycles/pixel, got {band_limit}")
    size = (int(size[0]), int(size[1]))
    rng = np.random.default_rng(seed)
    if kind == "calib":
        layout = chart_layout(size, pose, band_limit)
        return draw_chart(layout, rng), layout
    return GENERATORS[kind](size, rng, band_limit=band_limit), Layout(
        kind, size, pose=pose, band_limit=band_limit
    )


def make_targets(
    out_dir: str | Path,
    n: int = 6,
    size: tuple[int, int] = (512, 512),
    seed: int = 0,
    kinds: tuple[TargetKind, ...] = ("calib", "noise"),
    band_limit: float = BAND_LIMIT,
) -> list[Path]:
    """Write ``n`` targets ``target_000_calib.png``... (16-bit PNG + sidecar JSON), cycling ``kinds``.

    Each ``calib`` chart starts a pose; the targets after it, up to the next chart, are shown in the same
    pose and take their geometry from it (``Layout.geometry_from``). Without charts every target is its
    own pose, registered by feature matching.

    Returns:
        The written image paths, in order.
    """
    if n < 1:
        raise InputError(f"make_targets: n (-n/--count) must be >= 1, got {n}")
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise InputError(f"make_targets: --kinds must be a non-empty subset of {list(KINDS)}, got {kinds}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    pose, chart = -1, None
    for index in range(n):
        kind = kinds[index % len(kinds)]
        name = f"target_{index:03d}_{kind}"
        if kind == "calib":
            pose, chart = pose + 1, name
        elif chart is None:
            pose += 1
        image, layout = make_target(kind, size, seed=seed * 100_003 + index, pose=pose, band_limit=band_limit)
        if kind != "calib" and chart is not None:
            layout = Layout(layout.kind, layout.size, pose=pose, geometry_from=chart, band_limit=band_limit)
        path = write_image(out_dir / f"{name}.png", image)
        write_atomic(sidecar_path(path), json.dumps(asdict(layout), indent=1))
        paths.append(path)
    return paths
