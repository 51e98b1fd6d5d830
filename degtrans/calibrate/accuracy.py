"""Honest calibration metrics: what the targets could show, what the field gets right, how well it
re-blurs a photograph it was not fitted on.

- ``psf_error``: per-tile pixel relative L2, raw and centroid-aligned (``mean_centroid``,
  ``shift_psfs``; ``centred_field`` re-centres a field on green's centroid between registration rounds).
- ``target_band``: the half-side (cycles/px, photo grid) of the frequency square ``|fx|, |fy| <= band``
  in which the registered targets carry content. Outside it the photographs say nothing about the PSF:
  the prior decides.
- ``in_band_error``: the pixel error of both fields low-passed to that band (what calibration is
  responsible for); ``band_floor``: the error a perfect in-band calibration would still have
  (``||h - lowpass(h)|| / ||h||`` of the true field). Without the truth, ``band_floor`` of the
  recovered field estimates that floor (stored as ``out_of_band_share``).
- ``reblur_psnr``: the field applied to a registered target against its photograph, over the mask.
"""

from __future__ import annotations

import numpy as np

from degtrans.calibrate.fit import FitProblem
from degtrans.field import PSFField, normalise_psfs
from degtrans.metrics import psnr_array


def target_band(problem: FitProblem, threshold: float = 0.01, quantile: float = 0.05) -> float:
    """Half-side (cycles/px, photo grid) of the largest centred frequency square ``|fx|, |fy| <= band``
    that the registered targets cover (all pairs and channels, masked crops).

    A square, not a disc: a PSF on the pixel grid has a spectrum on the whole square up to 0.5, and
    targets with a square band (``targets.random_phase_noise``) fill it. A square ring counts as
    covered when ``quantile`` of its power is at least ``threshold`` times the mean
    over the square 0.05-0.2 cycles/px, so a radially band-limited target (empty corners) gets the
    square inscribed in its disc: the floor it implies errs on the high side, never the low one.
    """
    height, width = problem.frame_size
    window = np.outer(np.hanning(height), np.hanning(width))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    ring = np.maximum(np.abs(fy), fx)
    power = np.zeros_like(ring)
    for pair in range(problem.targets.shape[0]):
        valid = problem.masks[pair]
        for channel in problem.targets[pair]:
            mean = channel[valid].mean() if valid.any() else channel.mean()
            image = np.where(valid, channel - mean, 0.0) * window
            power += np.abs(np.fft.rfft2(image)) ** 2
    bins = np.linspace(0.0, 0.5, 51)
    # Rings of width 0.01; the Nyquist row and column (exactly 0.5) belong to the last one.
    index = np.minimum(np.digitize(ring.ravel(), bins), len(bins) - 1) - 1
    flat = power.ravel()
    reference = power[(ring >= 0.05) & (ring <= 0.2)].mean()
    # Rings below the reference band (a few bins each, next to the removed mean) and rings a small frame
    # has no frequency in do not end the square.
    covered = np.array(
        [
            bins[i] < 0.05
            or not np.any(index == i)
            or np.quantile(flat[index == i], quantile) >= threshold * reference
            for i in range(len(bins) - 1)
        ]
    )
    # The first uncovered ring ends the square: its inner edge is the band.
    return float(bins[len(covered) if covered.all() else int(np.argmin(covered))])


def lowpass_psfs(psfs: np.ndarray, band: float) -> np.ndarray:
    """``(..., k, k)`` PSFs with every frequency outside the square ``|fx|, |fy| <= band`` cycles/px
    removed (on a 2k zero-padded grid, so nothing wraps)."""
    k = psfs.shape[-1]
    n = 2 * k
    padded = np.zeros((*psfs.shape[:-2], n, n))
    padded[..., :k, :k] = psfs
    f = np.abs(np.fft.fftfreq(n))
    keep = np.maximum(f[:, None], f[None, :]) <= band + 1e-9
    return np.fft.ifft2(np.fft.fft2(padded) * keep).real[..., :k, :k]


def relative_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(rows, cols) relative L2 error of PSF stacks ``a`` against ``b`` (both (rows, cols, C, k, k))."""
    return np.sqrt(((a - b) ** 2).sum(axis=(2, 3, 4)) / (b**2).sum(axis=(2, 3, 4)))


def padded_psfs(recovered: PSFField, truth: PSFField) -> tuple[np.ndarray, np.ndarray]:
    """Both fields' PSFs in float64, the smaller kernel zero-padded to the larger one's size."""
    a, b = recovered.psfs.astype(np.float64), truth.psfs.astype(np.float64)
    pad = (a.shape[-1] - b.shape[-1]) // 2
    if pad > 0:
        b = np.pad(b, [(0, 0)] * 3 + [(pad, pad)] * 2)
    elif pad < 0:
        a = np.pad(a, [(0, 0)] * 3 + [(-pad, -pad)] * 2)
    return a, b


def in_band_error(recovered: PSFField, truth: PSFField, band: float) -> np.ndarray:
    """(rows, cols) relative L2 between both fields low-passed to ``band`` cycles/px."""
    a, b = padded_psfs(recovered, truth)
    return relative_l2(lowpass_psfs(a, band), lowpass_psfs(b, band))


def band_floor(truth: PSFField, band: float) -> np.ndarray:
    """(rows, cols) pixel error that knowing the field exactly up to ``band`` still leaves."""
    b = truth.psfs.astype(np.float64)
    return relative_l2(lowpass_psfs(b, band), b)


def reblur_psnr(field: PSFField, problem: FitProblem) -> list[float]:
    """PSNR (dB, peak 1) of each pair's registered target blurred by ``field`` against its photograph."""
    return [
        float(psnr_array(field.blur(problem.targets[p], layout="chw"), problem.photos[p], problem.masks[p]))
        for p in range(problem.targets.shape[0])
    ]


def field_metrics(field: PSFField, fitted: FitProblem, heldout: FitProblem | None) -> dict:
    """The metrics a calibration can state without the truth (stored in ``meta["metrics"]``)."""
    band = target_band(fitted)
    share = band_floor(field, band)
    metrics = {
        "target_band_cycles_per_px": band,
        "out_of_band_share_median": float(np.median(share)),
        "out_of_band_share_max": float(share.max()),
        "reblur_psnr_fitted_db": reblur_psnr(field, fitted),
    }
    if heldout is not None:
        metrics["reblur_psnr_heldout_db"] = reblur_psnr(field, heldout)
        metrics["heldout_pairs"] = list(heldout.names)
    return metrics


def truth_metrics(recovered: PSFField, truth: PSFField, band: float) -> dict:
    """Raw, centroid-aligned and in-band pixel errors against a known field, with the band's floor."""
    rows = {
        "raw": psf_error(recovered, truth),
        "aligned": psf_error(recovered, truth, align=True),
        "in_band": in_band_error(recovered, truth, band),
        "floor": band_floor(truth, band),
    }
    out = {}
    for name, values in rows.items():
        out[f"{name}_median"] = float(np.median(values))
        out[f"{name}_max"] = float(values.max())
    return out


def format_metrics(metrics: dict, truth: dict | None = None) -> str:
    """A few lines for the CLI and the report."""
    lines = []
    band = metrics.get("target_band_cycles_per_px")
    if band is not None:
        lines.append(
            f"targets cover the frequency square up to {band:.2f} cycles/px in each axis; the recovered"
            f" PSFs hold {metrics['out_of_band_share_median']:.3f} (median, max"
            f" {metrics['out_of_band_share_max']:.3f}) of their pixel L2 outside it: the prior's, not the"
            " photographs' (an estimate of the floor)"
        )
    for key, pairs in (
        ("reblur_psnr_heldout_db", f"held-out pair(s) {metrics.get('heldout_pairs')}"),
        ("reblur_psnr_fitted_db", "the fitted pairs (not held out)"),
    ):
        if metrics.get(key):
            lines.append(f"re-blur PSNR on {pairs}: " + ", ".join(f"{v:.2f}" for v in metrics[key]) + " dB")
    if truth:
        lines.append(
            "pixel error vs truth (median / max): raw {raw_median:.3f} / {raw_max:.3f}, centroid-aligned"
            " {aligned_median:.3f} / {aligned_max:.3f}, in-band {in_band_median:.3f} / {in_band_max:.3f},"
            " floor of the band {floor_median:.3f} / {floor_max:.3f}".format(**truth)
        )
    return "\n".join(lines)


def centred_field(psfs: np.ndarray, frame: tuple[int, int], reference: int = 1) -> PSFField:
    """A field of ``psfs`` (rows, cols, C, k, k) shifted tile by tile so that channel ``reference``'s
    centroid is at the kernel centre, every channel by the same amount (lateral colour is kept)."""
    reference = min(reference, psfs.shape[2] - 1)
    shift = -mean_centroid(psfs[:, :, reference : reference + 1])
    return PSFField(normalise_psfs(shift_psfs(psfs.astype(np.float64), shift)), frame)


def psf_error(recovered: PSFField, truth: PSFField, align: bool = False) -> np.ndarray:
    """Per-tile relative L2 error ``||h - h_true|| / ||h_true||`` over channels and pixels: (rows, cols).

    Kernels of different sizes are compared after zero-padding the smaller one about its centre.
    With ``align``, each true tile PSF is first shifted (all channels together, by a Fourier phase
    ramp) so that its mean centroid over channels matches the recovered one: registration cannot tell
    a PSF's centroid offset from geometric distortion (a homography absorbs the radial shift that
    coma and distortion give a real lens), so that offset is not the calibration's to recover.
    Relative shifts between channels (lateral colour) are kept and still count.
    """
    if recovered.grid != truth.grid or len(recovered.channels) != len(truth.channels):
        raise ValueError(
            f"psf_error: grids/channels differ: {recovered.grid}x{len(recovered.channels)} vs"
            f" {truth.grid}x{len(truth.channels)}"
        )
    a, b = padded_psfs(recovered, truth)
    if align:
        b = shift_psfs(b, mean_centroid(a) - mean_centroid(b))
    return relative_l2(a, b)


def mean_centroid(psfs: np.ndarray) -> np.ndarray:
    """(rows, cols, 2) centroid (dy, dx) in pixels about the kernel centre, averaged over channels."""
    k = psfs.shape[-1]
    coords = np.arange(k, dtype=np.float64) - k // 2
    total = psfs.sum(axis=(-1, -2))
    cy = (psfs.sum(axis=-1) * coords).sum(axis=-1) / total
    cx = (psfs.sum(axis=-2) * coords).sum(axis=-1) / total
    return np.stack([cy.mean(axis=-1), cx.mean(axis=-1)], axis=-1)


def shift_psfs(psfs: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Shift each tile's PSFs ``(rows, cols, C, k, k)`` by ``shift (rows, cols, 2)`` pixels ``(dy, dx)``
    (sub-pixel, Fourier phase ramp), clipped and renormalised to each PSF's sum.

    The kernel sits in the middle of a grid three times its size, so that a shift of up to ``k`` pixels
    either way moves content into zeros instead of wrapping it round; what leaves the ``k x k`` window
    is cut (not folded back onto the other side).
    """
    k = psfs.shape[-1]
    n = 3 * k
    padded = np.zeros((*psfs.shape[:-2], n, n))
    padded[..., k : 2 * k, k : 2 * k] = psfs
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    shift = np.asarray(shift, np.float64)
    ramp = np.exp(-2j * np.pi * (fy * shift[..., 0, None, None] + fx * shift[..., 1, None, None]))
    moved = np.fft.ifft2(np.fft.fft2(padded) * ramp[:, :, None]).real[..., k : 2 * k, k : 2 * k]
    moved = np.clip(moved, 0.0, None)
    return moved / moved.sum(axis=(-1, -2), keepdims=True) * psfs.sum(axis=(-1, -2), keepdims=True)
