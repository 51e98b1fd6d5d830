"""Synthetic PSF fields with known ground truth (tests, demo, round-trip validation)."""

from __future__ import annotations

import numpy as np

from degtrans.field import PSFField


def gaussian_psf(
    k: int, sigma_major: float, sigma_minor: float, angle: float, shift: tuple[float, float] = (0, 0)
) -> np.ndarray:
    """(k, k) normalised elliptical Gaussian; ``angle`` in radians, sigmas and shift in pixels."""
    r = k // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    yy, xx = yy - shift[0], xx - shift[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = cos * xx + sin * yy
    v = -sin * xx + cos * yy
    psf = np.exp(-0.5 * ((u / sigma_major) ** 2 + (v / sigma_minor) ** 2))
    return psf / psf.sum()


def gaussian_field(
    grid: tuple[int, int] = (3, 3),
    psf_size: int = 11,
    image_size: tuple[int, int] = (256, 256),
    sigma_centre: float = 0.8,
    sigma_corner: float = 2.0,
    ellipticity_corner: float = 0.5,
    chromatic: float = 0.15,
    camera: str = "synthetic-gaussian",
) -> PSFField:
    """A smoothly varying Gaussian field: width and radial ellipticity grow toward the corners.

    Args:
        grid: (rows, cols) of tiles.
        psf_size: k, odd.
        image_size: (H, W) of the frame.
        sigma_centre, sigma_corner: PSF sigma in pixels on axis and at the corners.
        ellipticity_corner: minor/major axis ratio lost at the corner (0 keeps them round).
        chromatic: relative extra width per channel step (R wider than G wider than B, axial CA).
    """
    rows, cols = grid
    psfs = np.zeros((rows, cols, 3, psf_size, psf_size), dtype=np.float64)
    for r in range(rows):
        for c in range(cols):
            fy = ((r + 0.5) / rows - 0.5) * 2
            fx = ((c + 0.5) / cols - 0.5) * 2
            radius = min(np.hypot(fy, fx) / np.sqrt(2), 1.0)
            major = sigma_centre + (sigma_corner - sigma_centre) * radius**2
            minor = major * (1.0 - ellipticity_corner * radius**2)
            angle = np.arctan2(fy, fx)
            for ch in range(3):
                scale = 1.0 + chromatic * (1 - ch)
                psfs[r, c, ch] = gaussian_psf(psf_size, major * scale, minor * scale, angle)
    return PSFField(
        psfs=psfs.astype(np.float32),
        image_size=image_size,
        meta={"camera": camera, "source": "degtrans.testing.synthetic.gaussian_field"},
    )


def identity_field(
    grid: tuple[int, int], psf_size: int, image_size: tuple[int, int], channels: int = 3
) -> PSFField:
    """A field of delta PSFs: blurring with it changes nothing."""
    psfs = np.zeros((grid[0], grid[1], channels, psf_size, psf_size), dtype=np.float32)
    psfs[..., psf_size // 2, psf_size // 2] = 1.0
    names = ("R", "G", "B")[:channels] if channels <= 3 else tuple(f"C{i}" for i in range(channels))
    return PSFField(psfs=psfs, image_size=image_size, channels=names, meta={"camera": "identity"})


def matched_gaussian_field(field: PSFField, camera: str = "gaussian") -> PSFField:
    """A generic stand-in for ``field``: one round Gaussian PSF in every tile and channel whose
    second-moment radius (``calibrate.inspect.second_moment_radius``, in pixels) is the mean of
    ``field``'s; the same grid, k and frame. What a practitioner who knows only how blurry the lens
    is might simulate with."""
    from degtrans.calibrate.inspect import second_moment_radius

    target = float(second_moment_radius(field.psfs).mean())
    k = field.kernel_size
    low, high = 1e-3, float(k)
    if float(second_moment_radius(gaussian_psf(k, high, high, 0.0))) < target:
        raise ValueError(f"matched_gaussian_field: a radius of {target:.2f} px does not fit in k = {k}")
    for _ in range(60):  # the truncated Gaussian's radius grows with sigma: bisect
        sigma = 0.5 * (low + high)
        if float(second_moment_radius(gaussian_psf(k, sigma, sigma, 0.0))) < target:
            low = sigma
        else:
            high = sigma
    sigma = 0.5 * (low + high)
    psfs = np.broadcast_to(gaussian_psf(k, sigma, sigma, 0.0), (*field.grid, len(field.channels), k, k))
    meta = {"camera": camera, "source": "degtrans.testing.synthetic.matched_gaussian_field",
            "matched_radius_px": target, "sigma_px": sigma}  # fmt: skip
    return PSFField(psfs=psfs.astype(np.float32), image_size=field.image_size, channels=field.channels,
                    meta=meta)  # fmt: skip
