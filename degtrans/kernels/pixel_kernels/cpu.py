"""Fast CPU path of per-pixel kernel application: one fused multiply-add per tap, no unfolded copy.

The reference unfolds the image into ``k*k`` shifted copies; here each tap adds ``K(u) * shift_u(x)`` into
the output with ``torch.addcmul``, so memory stays at a few images and autograd gives both gradients.
"""

from __future__ import annotations

import torch

from degtrans.kernels._utils import kernel_size, pad_image


def apply_pixel_kernels_cpu(
    x: torch.Tensor, kernels: torch.Tensor, padding: str = "zeros", dilation: int = 1
) -> torch.Tensor:
    """Same arguments and semantics as
    :func:`degtrans.kernels.pixel_kernels.reference.apply_pixel_kernels_reference`."""
    height, width = x.shape[-2:]
    taps = kernels.shape[-3]
    k = kernel_size(taps)
    d = dilation
    x_pad = pad_image(x, d * (k // 2), padding)
    kernels = kernels.to(x.dtype)
    if kernels.dim() == 4:
        kernels = kernels.unsqueeze(1)
    out = torch.zeros(torch.broadcast_shapes(x.shape, kernels[:, :, 0].shape), dtype=x.dtype, device=x.device)
    # unbind, not indexing: its backward stacks the tap gradients once instead of one full-size
    # zero tensor per tap.
    taps_k = kernels.unbind(2)
    for i in range(k):
        for j in range(k):
            window = x_pad[..., i * d : i * d + height, j * d : j * d + width]
            out = torch.addcmul(out, taps_k[i * k + j], window)
    return out
