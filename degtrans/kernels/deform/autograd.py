"""``torch.autograd.Function`` of the Triton DCNv2: Triton sampling and adjoints, torch contractions."""

from __future__ import annotations

import torch

from degtrans.kernels.deform._triton import deform_col2im, deform_im2col


class _DeformConv2d(torch.autograd.Function):
    # Under CUDA autocast the sampled columns keep the input's dtype (bfloat16 halves their traffic) and
    # the contractions autocast like any matmul (tensor cores); the kernels compute sample positions and
    # accumulate gradients in float32. custom_bwd runs the backward under the forward's autocast state.
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, offset, mask, weight, bias, dilation):  # noqa: D102
        cout, cin, k, _ = weight.shape
        cols = deform_im2col(x, offset, mask, k, dilation)
        out = torch.einsum("bcthw,oct->bohw", cols, weight.reshape(cout, cin, k * k))
        if bias is not None:
            out = out + bias.view(1, -1, 1, 1)
        ctx.save_for_backward(x, offset, mask, weight, cols)
        ctx.dilation = dilation
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_out):  # noqa: D102
        x, offset, mask, weight, cols = ctx.saved_tensors
        cout, cin, k, _ = weight.shape
        w = weight.reshape(cout, cin, k * k)
        grad_cols = torch.einsum("bohw,oct->bcthw", grad_out, w)
        grad_x, grad_offset, grad_mask = deform_col2im(x, offset, mask, grad_cols, k, ctx.dilation)
        grad_weight = torch.einsum("bcthw,bohw->oct", cols, grad_out).reshape(weight.shape)
        grad_bias = grad_out.sum((0, 2, 3)) if ctx.has_bias else None
        return grad_x, grad_offset, grad_mask, grad_weight, grad_bias, None


def deform_conv2d_triton(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dilation: int = 1,
) -> torch.Tensor:
    """Triton DCNv2, same contract as :func:`degtrans.kernels.deform.reference.deform_conv2d_reference`."""
    if mask is None:  # one modulation per group and tap
        mask = torch.ones((x.shape[0], offset.shape[1] // 2, *x.shape[-2:]), dtype=x.dtype, device=x.device)
    return _DeformConv2d.apply(x, offset, mask, weight, bias, dilation)
