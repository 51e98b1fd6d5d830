"""Modulated deformable convolution (DCNv2, Zhu et al. 2019) in pure torch with ``grid_sample``.

torchvision is not available; sampling every tap with one ``grid_sample`` call and contracting
with the weights in one ``einsum`` is exact (bilinear, zeros outside the image, as DCNv2) and
differentiable in the input, the offsets, the mask and the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dilation: int = 1,
) -> torch.Tensor:
    """Stride-1, 'same'-padded modulated deformable convolution.

    Args:
        x: (B, Cin, H, W) input.
        offset: (B, 2 * G * k * k, H, W) per offset group ``g`` and tap ``t``: channels
            ``2 * (g * k * k + t)`` (dy) and ``+ 1`` (dx), in pixels; taps are row-major.
        mask: (B, G * k * k, H, W) modulation (sigmoid output in DCNv2), or ``None`` for all ones.
        weight: (Cout, Cin, k, k), k odd.
        bias: (Cout,) or ``None``.
        dilation: tap spacing in pixels.

    Returns:
        (B, Cout, H, W).
    """
    batch, cin, height, width = x.shape
    cout, cin_w, k, k2 = weight.shape
    taps = k * k
    if k != k2 or k % 2 == 0 or cin_w != cin:
        raise ValueError(f"deform_conv2d: weight {tuple(weight.shape)} does not fit input {tuple(x.shape)}")
    if offset.shape[1] % (2 * taps) or offset.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"deform_conv2d: offset {tuple(offset.shape)} is not (B, 2*G*{taps}, {height}, {width})"
        )
    groups = offset.shape[1] // (2 * taps)
    if cin % groups:
        raise ValueError(f"deform_conv2d: {cin} input channels not divisible by {groups} offset groups")
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


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer: a small branch predicts offsets and masks from the input, then :func:`deform_conv2d`.

    The offset branch is zero-initialised (offsets 0, masks 0.5), so the layer starts as a plain conv.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        kernel_size: int = 3,
        offset_channels: int = 32,
        offset_groups: int = 1,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.offset_groups = offset_groups
        taps = kernel_size * kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.offset_features = nn.Conv2d(channels, offset_channels, 3, padding=1)
        self.offset_head = nn.Conv2d(offset_channels, 3 * offset_groups * taps, 3, padding=1)
        nn.init.zeros_(self.offset_head.weight)
        nn.init.zeros_(self.offset_head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, out_channels, H, W)."""
        head = self.offset_head(F.leaky_relu(self.offset_features(x), 0.1))
        split = 2 * self.offset_groups * self.kernel_size**2
        return deform_conv2d(x, head[:, :split], torch.sigmoid(head[:, split:]), self.weight, self.bias)


class DeformResBlock(nn.Module):
    """``x + conv(act(dcn(x)))``: the bottleneck block of FOV-KPN."""

    def __init__(self, channels: int, offset_channels: int = 32) -> None:
        super().__init__()
        self.dcn = ModulatedDeformConv2d(channels, channels, 3, offset_channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(F.leaky_relu(self.dcn(x), 0.1))
