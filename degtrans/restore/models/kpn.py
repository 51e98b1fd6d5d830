"""Kernel prediction at several dilations (FOV-KPN's head): per-pixel 5x5 kernels at dilations 1-4, fused.

Each dilation's kernels are applied by :func:`degtrans.kernels.apply_pixel_kernels` with its
``dilation`` (the Triton kernel on CUDA reads the autocast network's bfloat16 kernels in place, no copy
per dilation; one multiply-add per tap on CPU).
"""

from __future__ import annotations

import torch
from torch import nn

from degtrans.errors import InputError
from degtrans.kernels import apply_pixel_kernels


class MultiDilationKPN(nn.Module):
    """Predicts one ``k x k`` kernel per pixel, channel and dilation, applies each, fuses with a 3x3 conv.

    Initialised to the identity: every kernel starts as the delta (the prediction conv is zero) and the
    fusion averages the dilations. ``kernel_scale`` multiplies the predicted correction; 1 (undamped)
    is the measured choice (``train.fovkpn.kpn_kernel_scale``: 0.01 kept the head from learning under Adam).

    Args:
        features: channels of the feature map the kernels are predicted from.
        channels: image channels C.
        kernel_size: k, odd.
        dilations: tap spacings (the reference: 1, 2, 3, 4, a 17x17 support for k = 5).
        kernel_scale: factor on the predicted kernel correction.
    """

    def __init__(
        self,
        features: int,
        channels: int = 3,
        kernel_size: int = 5,
        dilations: tuple[int, ...] = (1, 2, 3, 4),
        kernel_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise InputError(
                f"MultiDilationKPN: kernel_size (train.fovkpn.kpn_kernel) must be odd, got {kernel_size}"
            )
        if not dilations or min(dilations) < 1:
            raise InputError(
                f"MultiDilationKPN: dilations (train.fovkpn.kpn_dilations) must be >= 1, got {dilations}"
            )
        self.channels, self.kernel_size = channels, kernel_size
        self.dilations = tuple(int(d) for d in dilations)
        self.kernel_scale = kernel_scale
        taps = kernel_size * kernel_size
        self.predict = nn.Conv2d(features, channels * taps * len(self.dilations), 3, padding=1)
        nn.init.zeros_(self.predict.weight)
        nn.init.zeros_(self.predict.bias)
        identity = torch.zeros(1, channels, taps, 1, 1)
        identity[:, :, taps // 2] = 1.0
        self.register_buffer("identity_kernel", identity, persistent=False)
        self.fuse = nn.Conv2d(channels * len(self.dilations), channels, 3, padding=1)
        with torch.no_grad():  # the mean of the dilations, channel by channel
            self.fuse.weight.zero_()
            self.fuse.bias.zero_()
            mean = torch.eye(channels).repeat(1, len(self.dilations)) / len(self.dilations)
            self.fuse.weight[:, :, 1, 1] = mean

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """image: (B, C, H, W); features: (B, F, H, W) -> (B, C, H, W)."""
        batch, _, height, width = image.shape
        taps = self.kernel_size**2
        shape = (batch, len(self.dilations), self.channels, taps, height, width)
        kernels = self.identity_kernel + self.kernel_scale * self.predict(features).view(shape)
        # unbind, not indexing: the backward of ``kernels[:, i]`` zero-fills a full-size gradient per
        # dilation (measured: 0.35 s -> 0.19 s per step of four dilations at batch 8, 96²).
        filtered = [
            apply_pixel_kernels(image, per_dilation, dilation=d, padding="reflect")
            for per_dilation, d in zip(kernels.unbind(1), self.dilations, strict=True)
        ]
        return self.fuse(torch.cat(filtered, dim=1))
