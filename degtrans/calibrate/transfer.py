"""Backward transfer (stage I): the global colour and tone relation between target and photograph.

Model: ``photo_c = (M · target + b)_c ** (1 / gamma_c)`` up to the optics, i.e. the screen's RGB is
mixed into camera RGB by a 3x3 matrix ``M`` (plus a black offset ``b``) before the lens blurs it per
channel, and the camera's tone curve is a per-channel power law (exactly linear for RAW). Stage II
then fits the optics between ``to_camera(target)`` and ``linearise(photo)``, both linear camera RGB.

Charts (``targets.Layout`` with patches) are fitted on their flat patches (:func:`fit_patches`): a
patch interior farther than the PSF's reach from its edges is the same in the photo whatever the
blur, so each patch gives one exact sample of the tone and colour relation, and the grey ramp's
levels pin down the tone curve's bend. Targets without patches fall back to :func:`fit_tone_colour`
on heavily low-passed images, which is weaker: low-passed broadband noise is nearly flat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from degtrans.errors import DegtransError

if TYPE_CHECKING:
    from degtrans.calibrate.register import Geometry
    from degtrans.calibrate.targets import Layout

# Photo values at or above this are treated as saturated.
SATURATED = 0.995
# Search range of the power law in stage I on patches.
GAMMA_RANGE = (0.3, 4.0)
# Coarse grid of gammas, then a fine one around the best coarse value.
COARSE_GAMMAS = np.round(np.arange(1.0, 2.81, 0.1), 4)
FINE_STEP = 0.01


class ToneFitError(DegtransError):
    """A photograph whose tone and colour cannot be fitted (too few usable pixels or patches)."""


@dataclass(frozen=True)
class ToneColour:
    """Stage I result: ``gamma`` (3,), ``matrix`` (3, 3) target RGB → camera RGB, ``offset`` (3,)."""

    gamma: np.ndarray
    matrix: np.ndarray
    offset: np.ndarray

    @classmethod
    def identity(cls) -> ToneColour:
        return cls(np.ones(3), np.eye(3), np.zeros(3))

    def to_dict(self) -> dict:
        return {"gamma": self.gamma.tolist(), "matrix": self.matrix.tolist(), "offset": self.offset.tolist()}


def linearise(photo: np.ndarray, tone: ToneColour) -> np.ndarray:
    """(H, W, 3) photo in [0, 1] → linear camera RGB: ``photo ** gamma``."""
    return (np.clip(photo, 0.0, 1.0) ** tone.gamma.astype(np.float32)).astype(np.float32)


def to_camera(target: np.ndarray, tone: ToneColour) -> np.ndarray:
    """(H, W, 3) registered target → camera RGB: ``M · target + b``."""
    return (target @ tone.matrix.T.astype(np.float32) + tone.offset.astype(np.float32)).astype(np.float32)


def _masked_lowpass(image: np.ndarray, mask: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised convolution of ``image`` (H, W, C) over ``mask`` (H, W): (H, W, C) and the (H, W) weight."""
    weight = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    # OpenCV drops a trailing channel axis of 1: restore the (H, W, C) shape explicitly.
    blurred = cv2.GaussianBlur(image * mask[..., None], (0, 0), sigma).reshape(image.shape)
    return blurred / np.maximum(weight, 1e-6)[..., None], weight


def fit_tone_colour(
    target: np.ndarray,
    photo: np.ndarray,
    mask: np.ndarray,
    sigma: float = 6.0,
    fit_gamma: bool = True,
) -> ToneColour:
    """Fit per-channel gamma + 3x3 colour matrix + offset from a registered pair.

    Args:
        target: (H, W, 3) target on the photo grid (``warp_to_photo``), [0, 1].
        photo: (H, W, 3) photograph, [0, 1].
        mask: (H, W) bool, pixels where the target is valid.
        sigma: low-pass sigma in pixels; make it several times the PSF width.
        fit_gamma: ``False`` assumes a linear photo (RAW read through rawpy).
    """
    if target.shape != photo.shape or target.shape[:2] != mask.shape:
        raise ValueError(
            f"fit_tone_colour: shapes differ: target {target.shape}, photo {photo.shape}, mask {mask.shape}"
        )
    # Everything here is low-pass: work on a smaller image (area average) with a smaller sigma. The
    # photo's power law is applied at full resolution, before averaging (averaging does not commute with it).
    factor = max(1, min(4, int(sigma // 2)))
    size = (target.shape[1] // factor, target.shape[0] // factor)

    def shrink(image: np.ndarray) -> np.ndarray:
        image = image.astype(np.float32)
        return image if factor == 1 else cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    full_photo = np.clip(photo, 0.0, 1.0).astype(np.float32)
    target, photo = shrink(target), shrink(full_photo)
    mask = shrink(mask.astype(np.float32)) > 0.999
    sigma = sigma / factor
    lt, weight = _masked_lowpass(target.astype(np.float32), mask, sigma)
    keep = (weight > 0.999) & mask
    # Avoid clipped photo pixels: there the power law says nothing.
    keep &= (photo.min(axis=-1) > 0.002) & (photo.max(axis=-1) < 0.998)
    index = np.flatnonzero(keep)
    if index.size < 100:
        raise ToneFitError(f"fit_tone_colour: only {index.size} usable pixels (need 100)")
    step = max(1, index.size // 50_000)
    index = index[::step]
    design = np.concatenate([lt.reshape(-1, 3)[index], np.ones((index.size, 1))], axis=1)  # float64
    gammas, rows, offsets = np.ones(3), np.eye(3), np.zeros(3)

    def score(ch: int, g: float) -> tuple[float, np.ndarray]:
        lp, _ = _masked_lowpass(shrink(full_photo[..., ch] ** np.float32(g))[..., None], mask, sigma)
        rhs = lp.reshape(-1)[index].astype(np.float64)
        coef, *_ = np.linalg.lstsq(design, rhs, rcond=None)
        residual = rhs - design @ coef
        return 1.0 - residual.var() / max(rhs.var(), 1e-12), coef

    def search(ch: int, candidates: np.ndarray, best: tuple) -> tuple[float, float, np.ndarray]:
        for g in candidates:
            r2, coef = score(ch, float(g))
            if r2 > best[0]:
                best = (r2, float(g), coef)
        return best

    for ch in range(3):
        best = search(ch, COARSE_GAMMAS if fit_gamma else np.array([1.0]), (-np.inf, 1.0, np.zeros(4)))
        if fit_gamma:
            best = search(ch, np.arange(max(1.0, best[1] - 0.1), best[1] + 0.1 + 1e-9, FINE_STEP), best)
        gammas[ch], rows[ch], offsets[ch] = best[1], best[2][:3], best[2][3]
    return ToneColour(gammas, rows, offsets)


@dataclass(frozen=True)
class PatchSamples:
    """Flat-patch measurements: ``target`` (N, 3) chart values, ``photo`` (N, 3) median photo values."""

    target: np.ndarray
    photo: np.ndarray


def patch_samples(photo: np.ndarray, geometry: Geometry, layout: Layout, margin: float) -> PatchSamples:
    """Median photo colour inside each chart patch, ``margin`` target pixels away from its edges.

    Args:
        photo: (H, W, 3) photograph in [0, 1].
        geometry: photo → target map (a coarse one is enough when ``margin`` covers its error).
        layout: the chart's layout (patches in target pixels).
        margin: pixels of the target to leave at each patch edge: the PSF's reach plus the geometry's error.
    """
    coords = geometry.target_coords()
    tx, ty = coords[..., 0], coords[..., 1]
    rows = []
    for patch in layout.patches:
        x0, y0, x1, y1 = patch.rect
        # Pixel centres of the patch run from x0 to x1 - 1; its edges lie half a pixel outside.
        inside = (tx >= x0 - 0.5 + margin) & (tx <= x1 - 0.5 - margin)
        inside &= (ty >= y0 - 0.5 + margin) & (ty <= y1 - 0.5 - margin)
        values = photo[inside]
        if len(values) < 9:
            continue
        rows.append((patch.rgb, np.median(values, axis=0)))
    if not rows:
        raise ToneFitError(
            f"patch_samples: no patch has an interior {margin:.1f} px from its edges in the photo"
            " (patches must be wider than the PSF: make the targets larger)"
        )
    return PatchSamples(*(np.asarray(v, np.float64) for v in zip(*rows, strict=True)))


def fit_patches(samples: PatchSamples, fit_gamma: bool = True) -> ToneColour:
    """Per channel: the power law ``gamma`` and the row of ``M``, ``b`` from flat-patch samples.

    For each ``gamma`` the row is a least-squares fit in linear light; ``gamma`` minimises the error in
    the photo's own (encoded) values, where the noise is uniform. Saturated patches are left out.

    Raises:
        ToneFitError: fewer than 5 unsaturated patches in a channel (the fit would be under-determined).
    """
    gammas, matrix, offsets = np.ones(3), np.eye(3), np.zeros(3)
    for ch in range(3):
        keep = (samples.photo[:, ch] < SATURATED) & (samples.photo[:, ch] > 0.0)
        if keep.sum() < 5:
            raise ToneFitError(
                f"fit_patches: only {int(keep.sum())} unsaturated patches in channel {ch} (need 5)"
            )
        design = np.concatenate([samples.target[keep], np.ones((int(keep.sum()), 1))], axis=1)
        observed = samples.photo[keep, ch]

        def solve(gamma: float, design=design, observed=observed) -> tuple[float, np.ndarray]:
            coef, *_ = np.linalg.lstsq(design, observed**gamma, rcond=None)
            predicted = np.clip(design @ coef, 1e-6, None) ** (1.0 / gamma)
            return float(((predicted - observed) ** 2).sum()), coef

        if fit_gamma:
            grid = np.exp(np.linspace(np.log(GAMMA_RANGE[0]), np.log(GAMMA_RANGE[1]), 60))
            errors = [solve(g)[0] for g in grid]
            best = int(np.argmin(errors))
            # Golden-section search between the coarse neighbours of the best.
            a, b = grid[max(0, best - 1)], grid[min(len(grid) - 1, best + 1)]
            ratio = (np.sqrt(5) - 1) / 2
            for _ in range(40):
                c, d = b - ratio * (b - a), a + ratio * (b - a)
                if solve(c)[0] < solve(d)[0]:
                    b = d
                else:
                    a = c
            gamma = (a + b) / 2
        else:
            gamma = 1.0
        _, coef = solve(gamma)
        gammas[ch], matrix[ch], offsets[ch] = gamma, coef[:3], coef[3]
    return ToneColour(gammas, matrix, offsets)


def fit_colour_blurred(
    blurred: np.ndarray, photo: np.ndarray, mask: np.ndarray, tone: ToneColour
) -> ToneColour:
    """Refit ``M``, ``b`` on every valid pixel through the optics: ``photo_c = sum_j M_cj blur_c(x_j) + b_c``.

    With a PSF estimate (a later registration round) every pixel is an exact sample of the colour
    relation, where the patches give only their interiors, which spatially variant PSFs do not leave
    flat (lateral colour and coma's centroid shifts move light across tile boundaries: 0.007 in the
    matrix on the sharp-centre lens, docs/calibration.md). ``gamma`` stays the patches'.

    Args:
        blurred: (H, W, 3, 3) ``[..., c, j]``: target channel ``j`` on the photo grid blurred by channel
            ``c``'s PSFs.
        photo: (H, W, 3) linearised photo (``linearise(photo, tone)``).
        mask: (H, W) bool pixels to use.
    """
    matrix, offset = tone.matrix.copy(), tone.offset.copy()
    for ch in range(3):
        keep = mask & (photo[..., ch] < SATURATED)
        design = np.concatenate([blurred[keep][:, ch, :], np.ones((int(keep.sum()), 1))], axis=1)
        coef, *_ = np.linalg.lstsq(design.astype(np.float64), photo[keep, ch].astype(np.float64), rcond=None)
        matrix[ch], offset[ch] = coef[:3], coef[3]
    return ToneColour(tone.gamma.copy(), matrix, offset)
