"""Training losses: L1 or L2 plus an optional SSIM term (no perceptual loss: no pretrained VGG offline)."""

from __future__ import annotations

import torch

from degtrans.metrics import ssim


def restoration_loss(
    pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.0, kind: str = "l1"
) -> torch.Tensor:
    """``mean|pred - target|`` (``kind="l1"``) or its square (``"l2"``) ``+ ssim_weight * (1 - SSIM)``.

    Args:
        pred, target: (B, C, H, W) images in [0, 1].
        ssim_weight: weight of the SSIM term (0 disables it).
        kind: ``"l1"`` or ``"l2"`` (mean squared error, the FOV-KPN reference's loss).
    """
    error = pred.float() - target.float()
    if kind not in ("l1", "l2"):
        raise ValueError(f"restoration_loss: kind must be 'l1' or 'l2', got {kind!r}")
    loss = error.abs().mean() if kind == "l1" else (error**2).mean()
    if ssim_weight > 0:
        loss = loss + ssim_weight * (1.0 - ssim(pred, target).mean())
    return loss
