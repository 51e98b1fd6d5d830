"""Calibration targets: images whose spectrum covers every frequency, so the inverse problem is well posed.

Three kinds (``degtrans calibrate make-targets``):

- ``noise``: random-phase noise with a 1/f amplitude spectrum, band-limited below Nyquist so that
  resampling it onto the photograph's grid is nearly exact; independent per channel (the colour fit
  of stage I needs chromatic variety, the PSF fit needs broadband texture).
- ``edges``: anti-aliased slanted-edge squares (ISO 12233 style, 5 degrees) over a noise background.
- ``checker``: a checkerboard with random disc markers, so that feature matching is not ambiguous.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from degtrans.io import write_image

TargetKind = Literal["noise", "edges", "checker"]
KINDS: tuple[TargetKind, ...] = ("noise", "edges", "checker")
# Roll-off frequency (cycles/pixel) of the noise: below Nyquist, so resampling onto the photo grid
# stays accurate, high enough that PSFs of sigma >= 0.7 px are identifiable.
BAND_LIMIT = 0.42


def random_phase_noise(size: tuple[int, int], rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    """(H, W, C) float32 in [0, 1]: 1/f amplitude, uniform random phase, smooth cut-off at ``BAND_LIMIT``."""
    height, width = size
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.hypot(fy, fx)
    # A nearly white spectrum (f^-0.3) keeps the high frequencies that identify a narrow PSF, while
    # the gentle tilt keeps some low-frequency colour variation for the stage I colour fit.
    amplitude = np.maximum(radius, 1.0 / max(height, width)) ** -0.3
    amplitude *= np.exp(-((radius / BAND_LIMIT) ** 8))
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


def slanted_edges(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32: slanted dark/bright squares (5 degrees) over low-contrast noise."""
    height, width = size
    background = 0.5 + 0.35 * (random_phase_noise(size, rng) - 0.5)
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


def checker_markers(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32: a checkerboard with random coloured disc markers."""
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


GENERATORS = {"noise": random_phase_noise, "edges": slanted_edges, "checker": checker_markers}


def make_target(kind: TargetKind, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """One target ``(H, W, 3)`` float32 in [0, 1] of ``kind`` (``noise``, ``edges`` or ``checker``)."""
    if kind not in GENERATORS:
        raise ValueError(f"make_target: kind must be one of {list(GENERATORS)}, got {kind!r}")
    if min(size) < 16:
        raise ValueError(f"make_target: size must be at least 16x16, got {size}")
    return GENERATORS[kind](tuple(int(s) for s in size), np.random.default_rng(seed))


def make_targets(
    out_dir: str | Path,
    n: int = 6,
    size: tuple[int, int] = (512, 512),
    seed: int = 0,
    kinds: tuple[TargetKind, ...] = ("noise", "noise", "edges", "checker"),
) -> list[Path]:
    """Write ``n`` targets as 16-bit PNG ``target_000_noise.png``... cycling through ``kinds``.

    Returns:
        The written paths, in order.
    """
    if n < 1:
        raise ValueError(f"make_targets: n must be >= 1, got {n}")
    bad = [k for k in kinds if k not in GENERATORS]
    if bad or not kinds:
        raise ValueError(f"make_targets: kinds must be a non-empty subset of {list(GENERATORS)}, got {kinds}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(n):
        kind = kinds[index % len(kinds)]
        image = make_target(kind, size, seed=seed * 100_003 + index)
        paths.append(write_image(out_dir / f"target_{index:03d}_{kind}.png", image))
    return paths
