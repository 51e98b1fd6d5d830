"""Pure-torch reference of modulated deformable convolution (DCNv2, Zhu et al. 2019): the specification.

torchvision is not available; sampling every tap with one ``grid_sample`` call and contracting
with the weights in one ``einsum`` is exact (bilinear, zeros outside the image, as DCNv2) and
differentiable in the input, the offsets, the mask and the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def deform_conv2d_reference(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dilation: int = 1,
) -> torch.Tensor:
    """:func:`degtrans.kernels.deform_conv2d` (same arguments but ``backend``), in torch: (B, Cout, H, W)."""
    batch, cin, height, width = x.shape
    cout, _, k, _ = weight.shape
    taps = k * k
    groups = offset.shape[1] // (2 * taps)
    half = k // 2
    ty, tx = torch.meshgrid(
        torch.arange(-half, half + 1, device=x.device, dtype=x.dtype) * dilation,
        torch.arange(-half, half + 1, device=x.device, dtype=x.dtype) * dilation,
        indexing="ij",
    )
    gy = torch.arange(height, device=x.device, dtype=x.dtype).view(1, 1, height, 1)
    gx = torch.arange(width, device=x.device, dtype=x.dtype).view(1, 1, 1, width)
    off = offset.view(batch * groups, taps, 2, height, width)
    sy = gy + ty.reshape(1, taps, 1, 1) + off[:, :, 0]
    sx = gx + tx.reshape(1, taps, 1, 1) + off[:, :, 1]
    # align_corners=True maps -1/+1 to the centres of the first/last pixel.
    grid = torch.stack(
        [sx * (2.0 / max(width - 1, 1)) - 1.0, sy * (2.0 / max(height - 1, 1)) - 1.0], dim=-1
    ).view(batch * groups, taps * height, width, 2)
    source = x.reshape(batch * groups, cin // groups, height, width)
    sampled = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    sampled = sampled.view(batch, groups, cin // groups, taps, height, width)
    if mask is not None:
        sampled = sampled * mask.view(batch, groups, 1, taps, height, width)
    sampled = sampled.reshape(batch, cin, taps, height, width)
    out = torch.einsum("bcthw,oct->bohw", sampled, weight.reshape(cout, cin, taps))
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
