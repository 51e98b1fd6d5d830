"""Honest calibration metrics: what the targets could show, what the field gets right, how well it
re-blurs a photograph it was not fitted on.

- ``psf_error`` (pipeline): per-tile pixel relative L2, raw and centroid-aligned.
- ``target_band``: the half-side (cycles/px, photo grid) of the frequency square ``|fx|, |fy| <= band``
  in which the registered targets carry content. Outside it the photographs say nothing about the PSF:
  the prior decides.
- ``in_band_error``: the pixel error of both fields low-passed to that band (what calibration is
  responsible for); ``band_floor``: the error a perfect in-band calibration would still have
  (``||h - lowpass(h)|| / ||h||`` of the true field). Without the truth, ``out_of_band_share`` of the
  recovered field estimates that floor.
- ``reblur_psnr``: the field applied to a registered target against its photograph, over the mask.
"""

from __future__ import annotations

import numpy as np

from degtrans.calibrate.fit import FitProblem
from degtrans.field import PSFField
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
    targets = problem.targets
    masks = problem.masks
    height, width = problem.frame_size
    window = np.outer(np.hanning(height), np.hanning(width))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    ring = np.maximum(np.abs(fy), fx)
    power = np.zeros_like(ring)
    for pair in range(targets.shape[0]):
        valid = masks[pair]
        for channel in targets[pair]:
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


def out_of_band_share(field: PSFField, band: float) -> np.ndarray:
    """(rows, cols) ``band_floor`` of a field (of the recovered one: an estimate of the true floor)."""
    return band_floor(field, band)


def reblur_psnr(field: PSFField, problem: FitProblem) -> list[float]:
    """PSNR (dB, peak 1) of each pair's registered target blurred by ``field`` against its photograph."""
    from degtrans.calibrate.report import reblur

    return [
        float(psnr_array(reblur(field, problem.targets[p]), problem.photos[p], problem.masks[p]))
        for p in range(problem.targets.shape[0])
    ]


def field_metrics(field: PSFField, fitted: FitProblem, heldout: FitProblem | None) -> dict:
    """The metrics a calibration can state without the truth (stored in ``meta["metrics"]``)."""
    band = target_band(fitted)
    share = out_of_band_share(field, band)
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
    from degtrans.calibrate.pipeline import psf_error

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
    held = metrics.get("reblur_psnr_heldout_db")
    if held:
        lines.append(
            f"re-blur PSNR on held-out pair(s) {metrics['heldout_pairs']}: "
            + ", ".join(f"{v:.2f}" for v in held)
            + " dB"
        )
    fitted = metrics.get("reblur_psnr_fitted_db")
    if fitted:
        lines.append(
            "re-blur PSNR on the fitted pairs (not held out): "
            + ", ".join(f"{v:.2f}" for v in fitted)
            + " dB"
        )
    if truth:
        lines.append(
            "pixel error vs truth (median / max): raw {raw_median:.3f} / {raw_max:.3f}, centroid-aligned"
            " {aligned_median:.3f} / {aligned_max:.3f}, in-band {in_band_median:.3f} / {in_band_max:.3f},"
            " floor of the band {floor_median:.3f} / {floor_max:.3f}".format(**truth)
        )
    return "\n".join(lines)
