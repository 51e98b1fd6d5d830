"""Classical non-blind baselines with the same PSF field: per-tile Wiener and Richardson-Lucy.

Every tile's PSF deconvolves the region where that tile's bilinear weight is non-zero (plus a
margin); the results are blended with the same bilinear tile weights as the forward model
(``degtrans.kernels.weights``), which sum to one at every pixel. Regions are mirror-extended before
the FFT so that nothing rings at their borders.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from degtrans.field import PSFField
from degtrans.kernels.weights import tile_weights_1d
from degtrans.restore.models.wiener import psf_to_otf, symmetric_extend

Method = Literal["wiener", "rl"]


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """Inverse sRGB transfer curve, values in [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """sRGB transfer curve, values clipped to [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=1e-12) ** (1 / 2.4) - 0.055)


def wiener_filter(image: torch.Tensor, psf: torch.Tensor, snr: float) -> torch.Tensor:
    """Classical Wiener deconvolution ``conj(K) / (|K|² + 1/snr)`` with one PSF per channel.

    Args:
        image: (C, H, W); psf: (C, k, k); snr: signal-to-noise power ratio (> 0).

    Returns:
        (C, H, W).
    """
    height, width = image.shape[-2:]
    extended = symmetric_extend(image.double())
    otf = psf_to_otf(psf.double(), *extended.shape[-2:])
    gain = otf.conj() / (otf.abs() ** 2 + 1.0 / snr)
    out = torch.fft.irfft2(gain * torch.fft.rfft2(extended), s=extended.shape[-2:])
    return out[..., :height, :width].to(image.dtype)


def richardson_lucy(
    image: torch.Tensor, psf: torch.Tensor, iterations: int, eps: float = 1e-6
) -> torch.Tensor:
    """Richardson-Lucy deconvolution (FFT convolutions on the mirror-extended image).

    Args:
        image: (C, H, W) non-negative; psf: (C, k, k); iterations: RL updates.

    Returns:
        (C, H, W) non-negative estimate.
    """
    height, width = image.shape[-2:]
    observed = symmetric_extend(image.float().clamp(min=0.0))
    size = observed.shape[-2:]
    otf = psf_to_otf(psf.float(), *size)
    estimate = observed.clone()
    for _ in range(iterations):
        blurred = torch.fft.irfft2(torch.fft.rfft2(estimate) * otf, s=size)
        ratio = observed / blurred.clamp(min=eps)
        estimate = estimate * torch.fft.irfft2(torch.fft.rfft2(ratio) * otf.conj(), s=size).clamp(min=0.0)
    return estimate[..., :height, :width].to(image.dtype)


def deconvolve_field(
    image: torch.Tensor,
    field: PSFField,
    method: Method = "wiener",
    *,
    offset: tuple[int, int] = (0, 0),
    frame_size: tuple[int, int] | None = None,
    snr: float = 100.0,
    iterations: int = 30,
    linearize: bool = True,
) -> torch.Tensor:
    """Spatially variant deconvolution: per-tile Wiener or RL, blended between tiles.

    Args:
        image: (C, H, W) in [0, 1], a patch of the sensor frame at ``offset`` (or the whole frame).
        field: the camera's PSF field (its ``image_size`` is the frame size unless ``frame_size``).
        method: ``"wiener"`` or ``"rl"``.
        snr, iterations: Wiener signal-to-noise ratio, RL iterations.
        linearize: deconvolve in linear light (sRGB curve undone before and redone after).

    Returns:
        (C, H, W) in [0, 1].
    """
    if method not in ("wiener", "rl"):
        raise ValueError(f"deconvolve_field: method must be 'wiener' or 'rl', got {method!r}")
    channels, height, width = image.shape
    if channels != field.psfs.shape[2]:
        raise ValueError(f"deconvolve_field: image has {channels} channels, the field {field.psfs.shape[2]}")
    frame_h, frame_w = frame_size or field.image_size
    rows, cols = field.grid
    k = field.kernel_size
    x = srgb_to_linear(image) if linearize else image
    wy = tile_weights_1d(torch.arange(height) + offset[0], rows, frame_h, torch.float64)
    wx = tile_weights_1d(torch.arange(width) + offset[1], cols, frame_w, torch.float64)
    out = torch.zeros((channels, height, width), dtype=torch.float64)
    psfs = torch.from_numpy(field.psfs)
    margin = 2 * k
    for r in range(rows):
        ys = torch.nonzero(wy[r]).flatten()
        if ys.numel() == 0:
            continue
        for c in range(cols):
            xs = torch.nonzero(wx[c]).flatten()
            if xs.numel() == 0:
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
            if method == "wiener":
                result = wiener_filter(region, psfs[r, c], snr)
            else:
                result = richardson_lucy(region, psfs[r, c], iterations)
            result = result[:, : ry1 - ry0, : rx1 - rx0].double()
            weight = wy[r, y_lo:y_hi, None] * wx[c, None, x_lo:x_hi]
            out[:, y_lo:y_hi, x_lo:x_hi] += (
                weight * result[:, y_lo - ry0 : y_hi - ry0, x_lo - rx0 : x_hi - rx0]
            )
    out = out.to(image.dtype)
    return linear_to_srgb(out) if linearize else out.clamp(0.0, 1.0)
