"""Calibration problems with known geometry and tone (the *oracle* path): stage II judged on its own.

Photographs are made exactly as ``degtrans.calibrate.photos.photograph`` models a camera — target
warped by a homography, the field's distortion map, the centred PSF field, Gaussian noise — but in
linear camera RGB with the identity colour/tone, and the registered target handed to stage II is the
true one (the same warp and distortion, no blur). Registration and stage I are not involved.
"""

from __future__ import annotations

import cv2
import numpy as np

from degtrans.calibrate.fit import FitProblem
from degtrans.calibrate.photos import jitter_homography
from degtrans.field import PSFField


def true_geometry(
    target: np.ndarray, field: PSFField, homography: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) target on the photo grid (homography, then the field's distortion) and (H, W) bool
    validity mask (the warped target covers the pixel)."""
    height, width = field.image_size
    warped = cv2.warpPerspective(
        target, homography, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )
    ones = np.ones(target.shape[:2], np.float32)
    cover = cv2.warpPerspective(ones, homography, (width, height), flags=cv2.INTER_NEAREST) > 0.5
    return field.distort(warped), field.distort(cover.astype(np.float32)) > 0.999


def oracle_pairs(
    targets: list[np.ndarray], field: PSFField, noise: float, seed: int, jitter: float = 2.0
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``[(target_on_photo_grid, photo, mask)]``, each (H, W, 3) float32 / (H, W) bool, one per target."""
    pairs = []
    for index, target in enumerate(targets):
        rng = np.random.default_rng([seed, index])
        homography = jitter_homography(target.shape[:2], field.image_size, jitter, rng)
        mapped, mask = true_geometry(target, field, homography)
        photo = field.blur(mapped) + rng.normal(0.0, noise, size=mapped.shape).astype(np.float32)
        pairs.append((mapped.astype(np.float32), photo.astype(np.float32), mask))
    return pairs


def oracle_problem(
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], grid: tuple[int, int], psf_size: int
) -> FitProblem:
    """The stage II problem of ``oracle_pairs`` (masks eroded so a pixel's whole footprint is valid)."""
    return FitProblem.stack(pairs, tuple(f"pair{i}" for i in range(len(pairs))), grid, psf_size)
