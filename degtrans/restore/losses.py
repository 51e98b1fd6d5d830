"""Training losses: L1 or L2 plus an optional SSIM term (no perceptual loss: no pretrained VGG offline)."""

from __future__ import annotations

import torch

from degtrans.metrics import ssim

LOSS_KINDS = ("l1", "l2", "psnr")
# MSE floor of the PSNR loss: 100 dB, far above any restoration, so it only guards log10(0).
PSNR_LOSS_EPS = 1e-10


def restoration_loss(
    pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.0, kind: str = "l1"
) -> torch.Tensor:
    """L1 (``kind="l1"``), L2 (``"l2"``) or PSNR (``"psnr"``) loss, ``+ ssim_weight * (1 - SSIM)``.

    ``"psnr"`` is minus the mean per-sample PSNR over 10 dB, ``mean_b log10(MSE_b + 1e-10)``: every
    sample counts by its relative error, as in an average PSNR over images, where L1/L2 let the noisy
    samples' large errors dominate the gradient.

    Args:
        pred, target: (B, C, H, W) images in [0, 1].
        ssim_weight: weight of the SSIM term (0 disables it).
        kind: ``"l1"``, ``"l2"`` (mean squared error, the FOV-KPN reference's loss) or ``"psnr"``.
    """
    error = pred.float() - target.float()
    if kind not in LOSS_KINDS:
        raise ValueError(f"restoration_loss: kind must be one of {LOSS_KINDS}, got {kind!r}")
    if kind == "psnr":
        loss = torch.log10(error.square().flatten(1).mean(1) + PSNR_LOSS_EPS).mean()
    else:
        loss = error.abs().mean() if kind == "l1" else (error**2).mean()
    if ssim_weight > 0:
        loss = loss + ssim_weight * (1.0 - ssim(pred, target).mean())
    return loss
