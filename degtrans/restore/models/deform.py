"""DCNv2 layers (Zhu et al. 2019) over :func:`degtrans.kernels.deform.deform_conv2d`.

The operator has a pure-torch reference (``grid_sample`` + ``einsum``, used on CPU) and a Triton
implementation (used on CUDA); torchvision is not available.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from degtrans.errors import InputError
from degtrans.kernels.deform import deform_conv2d


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
        # Contiguous: the reference views the offsets per group, which a channel slice does not allow.
        offset = head[:, :split].contiguous()
        return deform_conv2d(x, offset, torch.sigmoid(head[:, split:]), self.weight, self.bias)


class DeformResBlock(nn.Module):
    """``x + conv(act(dcn(x)))``: FOV-KPN's block in the bottleneck and at every decoder level.

    ``offset_groups`` (which must divide ``channels``) groups of channels sample at their own offsets
    (the reference uses 8).
    """

    def __init__(self, channels: int, offset_channels: int = 32, offset_groups: int = 1) -> None:
        super().__init__()
        if channels % offset_groups:
            raise InputError(
                f"DeformResBlock: offset_groups (train.fovkpn.offset_groups: {offset_groups}) must divide the"
                f" channels ({channels})"
            )
        self.dcn = ModulatedDeformConv2d(channels, channels, 3, offset_channels, offset_groups)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(F.leaky_relu(self.dcn(x), 0.1))
