"""Classical non-blind baselines with the same PSF field: noise-aware per-tile Wiener and Richardson-Lucy.

Both deconvolve in the domain where the PSF is defined: linear camera RGB through the pair's own ISP
(``isp``) when it is known, else the sRGB curve undone (an approximation for photographs). Both
are tuned by the noise level alone, by Morozov's discrepancy principle: the restored image, blurred
again, must explain the observation down to the noise and no further.

- Wiener: ``X = conj(K) Y / (|K|² + λ |D|²)`` with a gradient prior (``|D|²`` the power of the
  finite-difference operator, a 1/f² image spectrum); ``λ`` per tile and channel is the largest whose
  residual ``mean |Kx - y|²`` stays within ``discrepancy * noise variance``.
- Richardson-Lucy: iterated from the observation until that residual reaches the noise level (or
  ``iterations``); heavy noise stops it early, near the input, instead of letting it amplify noise.

The noise variance of a tile is ``shot * mean + read`` (the sensor model, from a pair's
``noise_shot``/``noise_read`` or a camera profile) or, when not given, estimated from the tile's
finest detail (``degtrans.simulate.noise.estimate_noise_variance`` times :data:`ESTIMATE_GAIN`).
Every tile's PSF deconvolves the region where its bilinear weight is non-zero (plus a margin); results
are blended with the forward model's tile weights (``degtrans.kernels.weights``), which sum to one.
Regions are mirror-extended before the FFT.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from degtrans.config import RestoreConfig
from degtrans.errors import InputError
from degtrans.field import PSFField
from degtrans.kernels.spectral import circular_blur, circular_blur_adjoint, psf_to_otf, symmetric_extend
from degtrans.kernels.weights import tile_weights_1d
from degtrans.simulate.isp import ISPParams, linear_to_srgb, process, srgb_to_linear, unprocess
from degtrans.simulate.noise import NoiseParams, estimate_noise_variance, noise_variance

Method = Literal["wiener", "rl"]
# Range of the Wiener weight λ (gradient prior) searched by bisection in log λ for the discrepancy.
LOG10_LAMBDA = (-9.0, 2.0)
BISECTIONS = 24
# The weakest prior allowed. The discrepancy principle sees only the noise, not the model's errors
# (demosaicking, clipping, the PSF's truncation), which an almost inverse filter amplifies without
# bound: noise-free simulated frames lose 15 dB at the λ it picks. Measured on toy frames through the
# camera chain (gaussian field, σ 1-2 px), fixed λ: 1e-4 -6.6 dB, 1e-3 -0.9, 1e-2 +2.0, 1e-1 +1.5
# over the input without noise, and λ ≥ 1e-1 was the only range above the input at every noise level.
MIN_LAMBDA = 0.1
# Richardson-Lucy stops when its residual reaches this many noise variances. Measured on phone-wide
# frames through the camera chain (Brooks et al.'s noise range), gain over the input: factor 1
# -5.7..0 dB, 2 -2.0..+0.7, 4 -0.2..+0.2: RL amplifies noise long before the residual says so.
RL_DISCREPANCY = 4.0
# The finest diagonal detail of a demosaicked image holds less noise than the sensor put there
# (demosaicking smooths it): measured on phone-wide frames with Brooks et al.'s noise range, the
# sensor model's variance is a median 4x the Haar estimate (0.2x..60x per tile), so the estimate is scaled.
ESTIMATE_GAIN = 4.0


def baseline_settings(config: RestoreConfig) -> dict[str, float | int]:
    """The ``[restore]`` settings of :func:`deconvolve_field` as its keyword arguments."""
    return {
        "discrepancy": config.discrepancy,
        "min_lambda": config.wiener_min_lambda,
        "rl_discrepancy": config.rl_discrepancy,
        "iterations": config.rl_iterations,
        "min_iterations": config.rl_min_iterations,
    }


@dataclass(frozen=True)
class SensorNoise:
    """Heteroscedastic sensor noise ``var = shot * x + read`` in linear camera units (one image)."""

    shot: float
    read: float

    def variance(self, linear: torch.Tensor) -> torch.Tensor:
        """(C,) noise variance of a linear region ``(C, h, w)`` at its mean level."""
        level = linear.double().clamp(min=0.0).flatten(1).mean(1)[None, :, None, None]
        params = NoiseParams(*torch.tensor([[self.shot], [self.read]], dtype=torch.float64))
        return noise_variance(level, params)[0, :, 0, 0]


def gradient_power(height: int, width: int) -> torch.Tensor:
    """(height, width // 2 + 1) ``|D_x|² + |D_y|²`` of forward differences on an rfft2 grid."""
    wy = 2.0 * math.pi * torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    wx = 2.0 * math.pi * torch.fft.rfftfreq(width, dtype=torch.float64)[None, :]
    return 4.0 * torch.sin(wy / 2) ** 2 + 4.0 * torch.sin(wx / 2) ** 2


def _half_plane_weights(width: int) -> torch.Tensor:
    """rfft2 column multiplicities: the columns between DC and Nyquist stand for two frequencies."""
    weights = torch.full((width // 2 + 1,), 2.0, dtype=torch.float64)
    weights[0] = 1.0
    if width % 2 == 0:
        weights[-1] = 1.0
    return weights


def wiener_filter(
    image: torch.Tensor,
    psf: torch.Tensor,
    noise_variance: torch.Tensor,
    discrepancy: float = 0.5,
    min_lambda: float = MIN_LAMBDA,
) -> torch.Tensor:
    """Wiener deconvolution with a gradient prior, its weight set by the discrepancy principle.

    Args:
        image: (C, H, W) linear; psf: (C, k, k); noise_variance: (C,) per-pixel noise variance.
        discrepancy: residual allowed, in units of the noise variance (1: Morozov; 0.5 measured better).
        min_lambda: the weakest prior weight allowed (:data:`MIN_LAMBDA`).

    Returns:
        (C, H, W).
    """
    height, width = image.shape[-2:]
    extended = symmetric_extend(image.double())
    h, w = extended.shape[-2:]
    otf = psf_to_otf(psf.double(), h, w)
    spectrum = torch.fft.rfft2(extended)
    power = spectrum.abs() ** 2 * _half_plane_weights(w) / (h * w) ** 2
    otf2, grad = otf.abs() ** 2, gradient_power(h, w)
    target = discrepancy * torch.as_tensor(noise_variance, dtype=torch.float64).reshape(-1, 1, 1)
    lo = torch.full_like(target, LOG10_LAMBDA[0])
    hi = torch.full_like(target, LOG10_LAMBDA[1])
    for _ in range(BISECTIONS):  # the residual grows with λ: keep the largest λ within the target
        mid = (lo + hi) / 2
        lam = 10.0**mid
        residual = ((lam * grad / (otf2 + lam * grad)) ** 2 * power).sum((-2, -1), keepdim=True)
        below = residual <= target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    lam = (10.0**lo).clamp(min=min_lambda)
    gain = otf.conj() / (otf2 + lam * grad)
    gain[:, 0, 0] = 1.0 / otf[:, 0, 0].real  # the mean is kept (the prior says nothing about it)
    out = torch.fft.irfft2(gain * spectrum, s=(h, w))
    return out[..., :height, :width].to(image.dtype)


def richardson_lucy(
    image: torch.Tensor,
    psf: torch.Tensor,
    iterations: int,
    noise_variance: torch.Tensor | None = None,
    discrepancy: float = 0.5,
    min_iterations: int = 0,
) -> torch.Tensor:
    """Richardson-Lucy deconvolution, stopped when the residual reaches the noise (per channel).

    Args:
        image: (C, H, W) non-negative; psf: (C, k, k); iterations: the most RL updates.
        noise_variance: (C,) per-pixel noise variance; ``None`` runs all ``iterations``.
        min_iterations: updates made before the stop is checked. The observation's own residual
            (``|k * y - y|²``) is often within the noise already, so a rule checked from the start
            stops before any update and returns the input.

    Returns:
        (C, H, W) non-negative estimate.
    """
    height, width = image.shape[-2:]
    observed = symmetric_extend(image.float().clamp(min=0.0))
    size = observed.shape[-2:]
    otf = psf_to_otf(psf.float(), *size)
    estimate = observed.clone()
    active = torch.ones(image.shape[0], dtype=torch.bool)
    for iteration in range(iterations):
        blurred = circular_blur(estimate, otf)
        if noise_variance is not None and iteration >= min_iterations:
            residual = ((blurred - observed) ** 2).flatten(1).mean(1).double()
            active &= residual > discrepancy * noise_variance
            if not bool(active.any()):
                break
        ratio = observed / blurred.clamp(min=1e-6)  # no division by a dark pixel's ~0
        update = estimate * circular_blur_adjoint(ratio, otf).clamp(min=0.0)
        estimate = torch.where(active[:, None, None], update, estimate)
    return estimate[..., :height, :width].to(image.dtype)


def deconvolve_field(
    image: torch.Tensor,
    field: PSFField,
    method: Method = "wiener",
    *,
    offset: tuple[int, int] = (0, 0),
    frame_size: tuple[int, int] | None = None,
    noise: SensorNoise | None = None,
    isp: ISPParams | None = None,
    discrepancy: float = 0.5,
    rl_discrepancy: float = RL_DISCREPANCY,
    iterations: int = 50,
    min_lambda: float = MIN_LAMBDA,
    min_iterations: int = 0,
) -> torch.Tensor:
    """Spatially variant, noise-aware deconvolution: per-tile Wiener or RL, blended between tiles.

    Args:
        image: (C, H, W) processed image in [0, 1], a patch of the sensor frame at ``offset`` (or
            the whole frame).
        field: the camera's PSF field (its ``image_size`` is the frame size unless ``frame_size``).
        method: ``"wiener"`` or ``"rl"``.
        noise: the image's sensor noise (linear camera units; needs ``isp``); ``None``: estimated
            per tile from the image.
        isp: the ISP that made ``image`` (``ISPParams`` of one sample): deconvolve in exact linear
            camera RGB; ``None``: undo the sRGB curve only.
        discrepancy, rl_discrepancy: residual the Wiener filter / RL may leave, in noise variances.
        iterations, min_iterations: the most RL updates per tile, and the fewest (before its stop).
        min_lambda: the Wiener filter's weakest prior weight.

    Returns:
        (C, H, W) in [0, 1].
    """
    channels, height, width = image.shape
    if channels != field.psfs.shape[2]:
        raise InputError(f"deconvolve_field: image has {channels} channels, the field {field.psfs.shape[2]}")
    if noise is not None and isp is None:
        raise ValueError("deconvolve_field: a sensor noise level needs the image's ISP (isp=) to map it")
    frame_h, frame_w = frame_size or field.image_size
    rows, cols = field.grid
    k = field.kernel_size
    x = unprocess(image[None].double(), isp)[0] if isp is not None else srgb_to_linear(image.double())
    wy = tile_weights_1d(torch.arange(height) + offset[0], rows, frame_h, torch.float64)
    wx = tile_weights_1d(torch.arange(width) + offset[1], cols, frame_w, torch.float64)
    out = torch.zeros((channels, height, width), dtype=torch.float64)
    psfs = torch.from_numpy(field.psfs)
    margin = 2 * k
    for r, c in itertools.product(range(rows), range(cols)):
        ys, xs = torch.nonzero(wy[r]).flatten(), torch.nonzero(wx[c]).flatten()
        if ys.numel() == 0 or xs.numel() == 0:
            continue
        y_lo, y_hi = int(ys.min()), int(ys.max()) + 1
        x_lo, x_hi = int(xs.min()), int(xs.max()) + 1
        ry0, ry1 = max(0, y_lo - margin), min(height, y_hi + margin)
        rx0, rx1 = max(0, x_lo - margin), min(width, x_hi + margin)
        region = x[:, ry0:ry1, rx0:rx1]
        # A region narrower than half the kernel cannot hold its mirror-extended OTF.
        pad_h, pad_w = max(0, (k + 1) // 2 - region.shape[1]), max(0, (k + 1) // 2 - region.shape[2])
        if pad_h or pad_w:
            region = F.pad(region[None], (0, pad_w, 0, pad_h), mode="replicate")[0]
        variance = ESTIMATE_GAIN * estimate_noise_variance(region)
        if noise is not None:
            # Demosaicking and model errors look like noise to the deconvolution: the sensor
            # model is a floor, not the whole budget.
            variance = torch.maximum(variance, noise.variance(region))
        if method == "wiener":
            result = wiener_filter(region, psfs[r, c], variance, discrepancy, min_lambda)
        else:
            result = richardson_lucy(region, psfs[r, c], iterations, variance, rl_discrepancy,
                                     min_iterations=min_iterations)  # fmt: skip
        result = result[:, : ry1 - ry0, : rx1 - rx0].double()
        weight = wy[r, y_lo:y_hi, None] * wx[c, None, x_lo:x_hi]
        out[:, y_lo:y_hi, x_lo:x_hi] += weight * result[:, y_lo - ry0 : y_hi - ry0, x_lo - rx0 : x_hi - rx0]
    if isp is not None:
        return process(out.clamp(0.0, 1.0)[None], isp)[0].to(image.dtype)
    return linear_to_srgb(out).to(image.dtype)
