"""Image quality metrics: PSNR and SSIM on images in [0, 1] (torch, differentiable), and PSNR of numpy
arrays. The one implementation every stage reports with."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def psnr(
    pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, eps: float = 1e-12
) -> torch.Tensor:
    """Peak signal-to-noise ratio per image.

    Args:
        pred, target: (B, C, H, W) images.

    Returns:
        (B,) PSNR in dB.
    """
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / (mse + eps))


def psnr_array(
    a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, data_range: float = 1.0
) -> float:
    """PSNR in dB of two same-shape arrays (numpy, float64 accumulation); ``mask``: (H, W) pixels to
    compare over the trailing two axes. ``inf`` for identical arrays."""
    diff = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2
    mse = float(diff[..., mask].mean()) if mask is not None else float(diff.mean())
    return float("inf") if mse == 0 else 10.0 * float(np.log10(data_range**2 / mse))


def ssim(
    pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004, Gaussian window, valid region) per image.

    Args:
        pred, target: (B, C, H, W) images; H, W >= ``window`` (smaller images use a smaller window).

    Returns:
        (B,) mean SSIM.
    """
    pred, target = pred.float(), target.float()
    channels = pred.shape[1]
    size = min(window, pred.shape[-1], pred.shape[-2])
    size -= 1 - size % 2
    coords = torch.arange(size, device=pred.device, dtype=pred.dtype) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(v, w, groups=channels)

    mu_x, mu_y = blur(pred), blur(target)
    sxx = blur(pred * pred) - mu_x**2
    syy = blur(target * target) - mu_y**2
    sxy = blur(pred * target) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(1)
