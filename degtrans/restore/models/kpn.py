"""Kernel prediction at several dilations (FOV-KPN's head): per-pixel 5x5 kernels at dilations 1-4, fused.

:func:`degtrans.kernels.apply_pixel_kernels` applies undilated kernels only; a kernel at dilation ``d``
is applied here on CUDA to the ``d x d`` polyphase components of the image, where it is undilated, so
the Triton kernel serves every dilation; on CPU as one multiply-add per tap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from degtrans.kernels import apply_pixel_kernels


def apply_dilated_pixel_kernels(
    x: torch.Tensor, kernels: torch.Tensor, dilation: int = 1, padding: str = "reflect"
) -> torch.Tensor:
    """``y(p) = sum_u K_p(u) x(p + dilation * (u - c))`` with ``c = k // 2``.

    Args:
        x: (B, C, H, W) image.
        kernels: (B, C, k*k, H, W) one kernel per pixel and channel, k odd; tap ``(i, j)`` is ``i * k + j``.
        dilation: tap spacing in pixels (>= 1).
        padding: ``"reflect"`` (mirror the image; ``"replicate"`` when the patch is smaller than the
            dilated halo) or ``"zeros"``.

    Returns:
        (B, C, H, W), differentiable in ``x`` and ``kernels``.
    """
    if dilation < 1:
        raise ValueError(f"apply_dilated_pixel_kernels: dilation must be >= 1, got {dilation}")
    if dilation == 1:
        return apply_pixel_kernels(x, kernels, padding=padding)
    if not x.is_cuda:
        # On CPU one fused multiply-add per tap on the padded image is ~6x faster than the polyphase copies.
        height, width = x.shape[-2:]
        k = int(round(kernels.shape[-3] ** 0.5))
        xp = _pad(x, (k // 2) * dilation, padding)
        out = torch.zeros_like(x)
        for tap, kernel in enumerate(kernels.to(x.dtype).unbind(2)):
            i, j = divmod(tap, k)
            window = xp[..., i * dilation : i * dilation + height, j * dilation : j * dilation + width]
            out = torch.addcmul(out, kernel, window)
        return out
    return polyphase_pixel_kernels(x, kernels, dilation, padding)


def polyphase_pixel_kernels(
    x: torch.Tensor, kernels: torch.Tensor, dilation: int, padding: str
) -> torch.Tensor:
    """:func:`apply_dilated_pixel_kernels` as undilated kernels on the ``d x d`` polyphase components."""
    batch, channels, height, width = x.shape
    taps = kernels.shape[-3]
    d = dilation
    halo = (int(round(taps**0.5)) // 2) * d
    # Pad by the dilated halo (the mirror of the full-resolution image), then to multiples of d: the
    # extra rows are never reached from inside the patch, and their kernels are zero.
    extra_h, extra_w = (-(height + 2 * halo)) % d, (-(width + 2 * halo)) % d
    xp = F.pad(_pad(x, halo, padding), (0, extra_w, 0, extra_h))
    kp = F.pad(kernels, (halo, halo + extra_w, halo, halo + extra_h))
    hq, wq = xp.shape[-2] // d, xp.shape[-1] // d
    phases = xp.view(batch, channels, hq, d, wq, d).permute(0, 1, 3, 5, 2, 4).reshape(batch, -1, hq, wq)
    phase_kernels = kp.view(batch, channels, taps, hq, d, wq, d).permute(0, 1, 4, 6, 2, 3, 5)
    y = apply_pixel_kernels(phases, phase_kernels.reshape(batch, -1, taps, hq, wq), padding="zeros")
    y = y.view(batch, channels, d, d, hq, wq).permute(0, 1, 4, 2, 5, 3)
    y = y.reshape(batch, channels, hq * d, wq * d)
    return y[..., halo : halo + height, halo : halo + width]


def _pad(x: torch.Tensor, halo: int, padding: str) -> torch.Tensor:
    if padding == "zeros":
        return F.pad(x, (halo, halo, halo, halo))
    return F.pad(x, (halo, halo, halo, halo), mode="reflect" if halo < min(x.shape[-2:]) else "replicate")


class MultiDilationKPN(nn.Module):
    """Predicts one ``k x k`` kernel per pixel, channel and dilation, applies each, fuses with a 3x3 conv.

    Initialised to the identity: every kernel starts as the delta (the prediction conv is zero) and the
    fusion averages the dilations. ``kernel_scale`` multiplies the predicted correction; 1 (undamped)
    is the measured choice (``train.kpn_kernel_scale``: 0.01 kept the head from learning under Adam).

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
            raise ValueError(f"MultiDilationKPN: kernel_size must be odd, got {kernel_size}")
        if not dilations or min(dilations) < 1:
            raise ValueError(f"MultiDilationKPN: dilations must be >= 1, got {dilations}")
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
        with torch.no_grad():
            self.fuse.weight.zero_()
            self.fuse.bias.zero_()
            for i in range(len(self.dilations)):
                for c in range(channels):
                    self.fuse.weight[c, i * channels + c, 1, 1] = 1.0 / len(self.dilations)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """image: (B, C, H, W); features: (B, F, H, W) -> (B, C, H, W)."""
        batch, _, height, width = image.shape
        taps = self.kernel_size**2
        shape = (batch, len(self.dilations), self.channels, taps, height, width)
        kernels = self.identity_kernel + self.kernel_scale * self.predict(features).view(shape)
        # unbind, not indexing: the backward of ``kernels[:, i]`` zero-fills a full-size gradient per
        # dilation (measured: 0.35 s -> 0.19 s per step of four dilations at batch 8, 96²).
        filtered = [
            apply_dilated_pixel_kernels(image, per_dilation, d)
            for per_dilation, d in zip(kernels.unbind(1), self.dilations, strict=True)
        ]
        return self.fuse(torch.cat(filtered, dim=1))
