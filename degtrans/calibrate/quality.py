"""Photo checks that decide whether a calibration photograph is usable, each with a reason.

A photo is rejected when it is clipped (saturated highlights carry no tone or blur information), out
of focus (far blurrier than the other photos of the run), of the wrong target (another chart's markers,
or no correlation with the registered target), or taken at a steep angle (the chart's magnification
varies so much across the frame that one PSF per tile no longer describes it).
"""

from __future__ import annotations

import cv2
import numpy as np

from degtrans.calibrate.transfer import SATURATED


class PhotoRejected(ValueError):
    """A photograph that must be left out of the calibration; the message is the reason."""


def clipped_fraction(photo: np.ndarray) -> float:
    """Fraction of pixels with a saturated channel (>= ``transfer.SATURATED``) in (H, W, 3) [0, 1]."""
    return float((photo >= SATURATED).any(axis=-1).mean())


def check_clipping(photo: np.ndarray, max_fraction: float) -> None:
    fraction = clipped_fraction(photo)
    if fraction > max_fraction:
        raise PhotoRejected(
            f"clipped: {100 * fraction:.2f}% of pixels saturated (at most {100 * max_fraction:.2f}% allowed);"
            " lower the exposure"
        )


def _bandpass(image: np.ndarray) -> np.ndarray:
    """Difference of Gaussians (sigmas 1 and 2 px): the band around 0.1 cycles/pixel."""
    image = image.astype(np.float32)
    return cv2.GaussianBlur(image, (0, 0), 1.0) - cv2.GaussianBlur(image, (0, 0), 2.0)


def sharpness(model: np.ndarray, photo: np.ndarray, mask: np.ndarray) -> float:
    """How much of the target's mid-band (~0.1 cycles/px) contrast reaches the photo: an MTF estimate.

    The regression slope of the band-passed photo on the band-passed registered target (noise in the
    photo does not bias it). 1 for a perfect lens, near 0 out of focus.

    Args:
        model: (H, W) registered target in the photo's linear scale (one channel).
        photo: (H, W) linear photo (same channel).
        mask: (H, W) bool valid pixels.
    """
    keep = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    a, b = _bandpass(model)[keep].astype(np.float64), _bandpass(photo)[keep].astype(np.float64)
    return float((a * b).sum() / max((a * a).sum(), 1e-12))


def correlation(model: np.ndarray, photo: np.ndarray, mask: np.ndarray, sigma: float) -> float:
    """Correlation of the low-passed registered target and photo: near 1 for the right target."""
    keep = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    a = cv2.GaussianBlur(model.astype(np.float32), (0, 0), sigma)[keep]
    b = cv2.GaussianBlur(photo.astype(np.float32), (0, 0), sigma)[keep]
    if a.std() < 1e-6 or b.std() < 1e-6:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])
