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
from degtrans.errors import DegtransError


class PhotoRejected(DegtransError):
    """A photograph that must be left out of the calibration; the message is the reason."""


def check_clipping(photo: np.ndarray, max_fraction: float) -> None:
    """Reject (H, W, 3) ``photo`` when more than ``max_fraction`` of its pixels have a saturated channel."""
    fraction = float((photo >= SATURATED).any(axis=-1).mean())
    if fraction > max_fraction:
        raise PhotoRejected(
            f"clipped: {100 * fraction:.2f}% of pixels saturated (at most {100 * max_fraction:.2f}% allowed);"
            " lower the exposure"
        )


# The ring of frequencies (cycles/px) where ``sharpness`` measures the contrast transfer.
SHARPNESS_BAND = (0.08, 0.12)


def sharpness(model: np.ndarray, photo: np.ndarray, mask: np.ndarray) -> float:
    """How much of the target's contrast at ``SHARPNESS_BAND`` (~0.1 cycles/px) reaches the photo (MTF).

    The least-squares transfer ``Re Σ P·conj(T) / Σ |T|²`` over the frequency ring, from the spectra of
    the windowed registered target ``T`` and photo ``P`` (noise in the photo does not bias it). A thin
    ring, so that the number is the lens's MTF there whatever the target's spectrum (a chart's marker
    edges and a noise pattern give the same value). 1 for a perfect lens, near 0 out of focus.

    Args:
        model: (H, W) registered target in the photo's linear scale (one channel).
        photo: (H, W) linear photo (same channel).
        mask: (H, W) bool valid pixels.
    """
    keep = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    height, width = model.shape
    weight = keep * np.outer(np.hanning(height), np.hanning(width))
    spectra = []
    for image in (model, photo):
        image = image.astype(np.float64)
        mean = image[keep].mean() if keep.any() else image.mean()
        spectra.append(np.fft.rfft2((image - mean) * weight))
    radius = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    ring = (radius >= SHARPNESS_BAND[0]) & (radius <= SHARPNESS_BAND[1])
    target, observed = spectra[0][ring], spectra[1][ring]
    return float((observed * target.conj()).real.sum() / max((np.abs(target) ** 2).sum(), 1e-12))


def correlation(model: np.ndarray, photo: np.ndarray, mask: np.ndarray, sigma: float) -> float:
    """Correlation of the low-passed registered target and photo: near 1 for the right target."""
    keep = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    a = cv2.GaussianBlur(model.astype(np.float32), (0, 0), sigma)[keep]
    b = cv2.GaussianBlur(photo.astype(np.float32), (0, 0), sigma)[keep]
    if a.std() < 1e-6 or b.std() < 1e-6:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])
