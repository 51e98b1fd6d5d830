"""Pure-torch reference of per-pixel kernel application (kernel-prediction networks).

``y(p) = sum_u K_p(u) x(p + d (u - c))`` with ``c = k // 2`` and dilation ``d``, computed with ``F.unfold``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from degtrans.kernels._utils import kernel_size, pad_image


def apply_pixel_kernels_reference(
    x: torch.Tensor, kernels: torch.Tensor, padding: str = "zeros", dilation: int = 1
) -> torch.Tensor:
    """Apply one k x k kernel per pixel.

    Args:
        x: (B, C, H, W) image.
        kernels: (B, k*k, H, W) shared by all channels, or (B, C, k*k, H, W) per channel;
            tap ``u = (i, j)`` is index ``i * k + j``.
        padding: ``"zeros"`` or ``"reflect"``.
        dilation: tap spacing in pixels.

    Returns:
        (B, C, H, W).
    """
    batch, channels, height, width = x.shape
    taps = kernels.shape[-3]
    k = kernel_size(taps)
    patches = F.unfold(pad_image(x, dilation * (k // 2), padding), k, dilation=dilation)
    patches = patches.view(batch, channels, taps, height, width)
    if kernels.dim() == 4:
        kernels = kernels.unsqueeze(1)
    return (patches * kernels.to(x.dtype)).sum(dim=2)
