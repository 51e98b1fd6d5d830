"""The Triton backend of ``apply_pixel_kernels``: one ``torch.autograd.Function`` over three kernels."""

from __future__ import annotations

import torch

from degtrans.kernels._utils import kernel_size, pad_image, triton_dtype
from degtrans.kernels.pixel_kernels import _triton


class PixelKernelsFunction(torch.autograd.Function):
    """``y = K x_pad`` with Triton forward, adjoint (grad of ``x_pad``) and kernel-gradient kernels."""

    @staticmethod
    def forward(ctx, x_pad, kernels, dilation):
        x_pad = x_pad.contiguous()
        # A slice of a larger kernel tensor (one dilation of several) is used in place: only each
        # batch element's block has to be contiguous.
        if not kernels[0].is_contiguous():
            kernels = kernels.contiguous()
        ctx.save_for_backward(x_pad, kernels)
        ctx.dilation = dilation
        return _triton.apply(x_pad, kernels, dilation)

    @staticmethod
    def backward(ctx, grad_out):
        x_pad, kernels = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_x = _triton.apply(grad_out, kernels, ctx.dilation, tuple(x_pad.shape[-2:]))
        if ctx.needs_input_grad[1]:
            grad_k = _triton.kernel_grad(x_pad, grad_out, kernels, ctx.dilation)
        return grad_x, grad_k, None


def apply_pixel_kernels_triton(
    x: torch.Tensor, kernels: torch.Tensor, padding: str = "zeros", dilation: int = 1
) -> torch.Tensor:
    """Triton implementation of :func:`degtrans.kernels.apply_pixel_kernels` (same semantics).

    The image and the kernels keep their dtypes (float32 images and bfloat16 kernels under autocast are
    read as they are; the sums run in float32); the output has the image's dtype.
    """
    k = kernel_size(kernels.shape[-3])
    per_channel = kernels if kernels.dim() == 5 else kernels.unsqueeze(1)
    out = PixelKernelsFunction.apply(
        pad_image(x.to(triton_dtype(x.dtype)), dilation * (k // 2), padding),
        per_channel.to(triton_dtype(kernels.dtype)),
        dilation,
    )
    return out.to(x.dtype)
