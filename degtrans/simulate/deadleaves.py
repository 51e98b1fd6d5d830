"""Dead-leaves images: synthetic clean images for training restoration networks, made, not downloaded.

Opaque discs with power-law radii (density ∝ r⁻³) are dropped one under the other until the frame is
covered (Lee, Mumford and Huang 2001). The model is scale invariant, so its spectrum falls as 1/f²
like a natural image's, and it has what deblurring needs most: sharp edges at every scale, every
orientation, and flat regions over the whole tonal range. Restoration networks trained on such
images come close to those trained on photographs (Achddou et al. 2021). Colours mix a grey level
drawn over [0, 1] with a random chroma, so there are whites, blacks and saturated colours, which a
handful of sample photographs lacks.

Flat discs have no texture, and most of what a blur takes from a photograph is texture (wood grain,
fur, foliage). With ``texture > 0`` that fraction of the discs is textured (Achddou et al. 2023): a
grating between two colours (period 2-32 px, any orientation), a shading ramp, or the disc's colour
modulated by a 1/f noise field shared by the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from degtrans.errors import InputError
from degtrans.io import write_image

# Radii in pixels of the frame: the smallest disc is about a pixel, the largest a third of the frame.
MIN_RADIUS = 1.0
SUPERSAMPLE = 2  # discs are drawn at twice the resolution, then averaged: anti-aliased edges
# Periods of the gratings in pixels of the frame: from Nyquist to a large disc's size.
GRATING_PERIODS = (2.0, 32.0)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    grey = rng.random()
    chroma = rng.uniform(0.0, 0.6) * (rng.random(3) - 0.5)
    return np.clip(grey + chroma, 0.0, 1.0).astype(np.float32)


def _pink_noise(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(height, width) noise with a 1/f amplitude spectrum, unit standard deviation."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(height, width))
    spectrum = amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape))
    noise = np.fft.irfft2(spectrum, s=(height, width))
    return ((noise - noise.mean()) / noise.std()).astype(np.float32)


def _texture(
    kind: int, colour: np.ndarray, yy: np.ndarray, xx: np.ndarray, noise: np.ndarray, scale: int,
    rng: np.random.Generator,
) -> np.ndarray:  # fmt: skip
    """(n, 3) colours of the ``n`` pixels at ``yy, xx`` (supersampled grid) of one textured disc."""
    theta = rng.uniform(0.0, np.pi)
    along = (yy * np.sin(theta) + xx * np.cos(theta)) / scale  # in pixels of the frame
    if kind == 0:  # grating between two colours, sharp-edged to sinusoidal
        period = np.exp(rng.uniform(*np.log(GRATING_PERIODS)))
        wave = np.sin(2.0 * np.pi * along / period + rng.uniform(0.0, 2.0 * np.pi))
        hardness = np.exp(rng.uniform(0.0, np.log(8.0)))
        t = 0.5 + 0.5 * np.tanh(hardness * wave) / np.tanh(hardness)
        return colour * (1.0 - t[:, None]) + _random_colour(rng) * t[:, None]
    if kind == 1:  # shading ramp across the disc
        ramp = (along - along.mean()) / max(float(np.ptp(along)), 1.0)
        return colour * (1.0 + rng.uniform(0.3, 1.5) * ramp[:, None])
    return colour * (1.0 + rng.uniform(0.1, 0.5) * noise[:, None])  # 1/f noise texture


def dead_leaves(
    height: int,
    width: int,
    rng: np.random.Generator,
    max_radius: float | None = None,
    max_discs: int = 200_000,
    texture: float = 0.0,
) -> np.ndarray:
    """One dead-leaves image.

    Args:
        height, width: frame size in pixels.
        rng: the random stream (seeded by the caller).
        max_radius: largest disc radius in pixels (default: a third of the shorter side).
        max_discs: stop after this many discs even if a few pixels are still uncovered (they keep
            the last disc's colour: never the case at the default sizes).
        texture: fraction of the discs that are textured (grating, shading or 1/f noise), in [0, 1].

    Returns:
        (height, width, 3) float32 in [0, 1].
    """
    if height < 1 or width < 1:
        raise InputError(f"dead_leaves: frame size (--size) must be positive, got {height}x{width}")
    s = SUPERSAMPLE
    big_h, big_w = height * s, width * s
    r_min = MIN_RADIUS * s
    r_max = (max_radius if max_radius is not None else min(height, width) / 3.0) * s
    if r_max <= r_min:
        raise InputError(
            f"dead_leaves: max_radius (default: a third of the smaller --size side) must exceed"
            f" {MIN_RADIUS} px, got {r_max / s:g}"
        )
    if not 0.0 <= texture <= 1.0:
        raise InputError(f"dead_leaves: texture (--texture) must be a fraction in [0, 1], got {texture}")
    noise = _pink_noise(big_h, big_w, rng) if texture > 0 else None
    image = np.zeros((big_h, big_w, 3), dtype=np.float32)
    covered = np.zeros((big_h, big_w), dtype=bool)
    rows, cols = np.arange(big_h)[:, None], np.arange(big_w)[None, :]  # sliced: np.ogrid costs more
    remaining = big_h * big_w
    colour = np.zeros(3, dtype=np.float32)
    for _ in range(max_discs):
        if remaining == 0:
            break
        # Inverse CDF of the density r^-3 on [r_min, r_max].
        u = rng.random()
        radius = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5
        cy, cx = rng.uniform(-radius, big_h + radius), rng.uniform(-radius, big_w + radius)
        y0, y1 = max(0, int(cy - radius)), min(big_h, int(cy + radius) + 1)
        x0, x1 = max(0, int(cx - radius)), min(big_w, int(cx + radius) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        window = covered[y0:y1, x0:x1]
        if window.all():  # hidden under earlier discs: most late ones (same images, fewer operations)
            continue
        yy, xx = rows[y0:y1], cols[:, x0:x1]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        free = disc & ~window
        if not free.any():
            continue
        colour = _random_colour(rng)
        # Flat discs draw no more random numbers than before, so texture = 0 keeps the old images.
        if texture > 0 and rng.random() < texture:
            ys, xs = np.nonzero(free)
            ys, xs = ys + y0, xs + x0
            values = _texture(int(rng.integers(3)), colour, ys - cy, xs - cx, noise[ys, xs], s, rng)
            image[ys, xs] = np.clip(values, 0.0, 1.0)
        else:
            image[y0:y1, x0:x1][free] = colour
        covered[y0:y1, x0:x1] |= free
        remaining -= int(free.sum())
    if remaining:
        image[~covered] = colour
    return image.reshape(height, s, width, s, 3).mean(axis=(1, 3))


def write_dead_leaves(
    folder: str | Path, count: int, size: tuple[int, int], seed: int = 0, texture: float = 0.0
) -> list[Path]:
    """Write ``count`` dead-leaves images of ``size`` (H, W) as 16-bit PNGs ``deadleaves-NNNN.png``.

    Image ``i`` depends only on ``(seed, i, texture)``, so a larger ``count`` extends a set without
    changing it. ``texture``: fraction of textured discs (:func:`dead_leaves`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = dead_leaves(*size, np.random.default_rng([seed, i]), texture=texture)
        paths.append(write_image(folder / f"deadleaves-{i:04d}.png", image))
    return paths
