"""Small building blocks shared by the restoration networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with leaky ReLU."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), 0.1)), 0.1)


class FOVBlock(nn.Module):
    """Feature modulation by FOV coordinates: ``f * (1 + gamma(c)) + beta(c)`` (SFT-style).

    Zero-initialised output layer, so the block starts as the identity.
    """

    def __init__(self, channels: int, coord_channels: int = 3, hidden: int = 16) -> None:
        super().__init__()
        self.hidden = nn.Conv2d(coord_channels, hidden, 1)
        self.out = nn.Conv2d(hidden, 2 * channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """features: (B, C, h, w); coords: (B, 3, h, w) at the same scale."""
        gamma, beta = self.out(F.leaky_relu(self.hidden(coords), 0.1)).chunk(2, dim=1)
        return features * (1.0 + gamma) + beta


def pad_to_multiple(
    x: torch.Tensor, coords: torch.Tensor, multiple: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Replicate-pad ``x: (B, C, H, W)`` and its ``coords: (B, 3, H, W)`` (as ``x``'s dtype) bottom/right
    to multiples of ``multiple`` -> (x, coords, (H, W))."""
    height, width = x.shape[-2:]
    ph, pw = (-height) % multiple, (-width) % multiple
    coords = coords.to(x.dtype)
    if ph or pw:
        x, coords = (F.pad(t, (0, pw, 0, ph), mode="replicate") for t in (x, coords))
    return x, coords, (height, width)
