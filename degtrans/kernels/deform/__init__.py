"""Modulated deformable convolution (DCNv2): dispatch between the torch reference and Triton."""

from __future__ import annotations

import torch

from degtrans.kernels._utils import check_choice
from degtrans.kernels.deform.reference import deform_conv2d_reference

_BACKENDS = ("auto", "reference", "triton")
# What "auto" runs on CUDA tensors. The Triton kernels pass their interpreter tests but have not yet run
# on a GPU: "auto" keeps the reference until the GPU-marked tests in tests/kernels/test_deform.py pass on
# a device and benchmarks/gpu_check.py's train-speed step (which times FOV-KPN with each) shows Triton
# faster; then this is "triton".
AUTO_ON_CUDA = "reference"


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dilation: int = 1,
    *,
    backend: str = "auto",
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
        backend: ``"auto"`` (``AUTO_ON_CUDA`` on CUDA tensors, the reference otherwise),
            ``"reference"`` or ``"triton"``. Under autocast the Triton path samples in the input's dtype
            and its contractions autocast (bfloat16 on tensor cores); sampling sums run in float32.

    Returns:
        (B, Cout, H, W), differentiable in ``x``, ``offset``, ``mask``, ``weight`` and ``bias``.
    """
    batch, cin, height, width = x.shape
    cout, cin_w, k, k2 = weight.shape
    taps = k * k
    if k != k2 or k % 2 == 0 or cin_w != cin:
        raise ValueError(f"deform_conv2d: weight {tuple(weight.shape)} does not fit input {tuple(x.shape)}")
    if offset.shape[1] % (2 * taps) or offset.shape[-2:] != x.shape[-2:] or offset.shape[0] != batch:
        raise ValueError(
            f"deform_conv2d: offset {tuple(offset.shape)} is not (B, 2*G*{taps}, {height}, {width})"
        )
    groups = offset.shape[1] // (2 * taps)
    if cin % groups:
        raise ValueError(f"deform_conv2d: {cin} input channels not divisible by {groups} offset groups")
    if mask is not None and tuple(mask.shape) != (batch, groups * taps, height, width):
        raise ValueError(
            f"deform_conv2d: mask {tuple(mask.shape)} is not (B, {groups * taps}, {height}, {width})"
        )
    check_choice("deform_conv2d", "backend", backend, _BACKENDS)
    if backend == "auto":
        backend = AUTO_ON_CUDA if x.is_cuda else "reference"
    if backend == "reference":
        return deform_conv2d_reference(x, offset, mask, weight, bias, dilation)
    # Imported here so that importing degtrans.kernels never imports triton.
    from degtrans.kernels.deform.autograd import deform_conv2d_triton

    return deform_conv2d_triton(x, offset, mask, weight, bias, dilation)
