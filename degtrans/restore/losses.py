"""Training losses: L1 plus an optional SSIM term (no perceptual loss: no pretrained VGG offline)."""

from __future__ import annotations

import torch

from degtrans.restore.metrics import ssim


def restoration_loss(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.0) -> torch.Tensor:
    """``mean|pred - target| + ssim_weight * (1 - SSIM)``, a scalar.

    Args:
        pred, target: (B, C, H, W) images in [0, 1].
        ssim_weight: weight of the SSIM term (0 disables it).
    """
    loss = (pred.float() - target.float()).abs().mean()
    if ssim_weight > 0:
        loss = loss + ssim_weight * (1.0 - ssim(pred, target).mean())
    return loss
