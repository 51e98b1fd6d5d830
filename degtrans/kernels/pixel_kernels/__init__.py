"""Per-pixel kernel application: dispatch between the reference, the CPU path and Triton."""

from __future__ import annotations

import torch
from torch import nn

from degtrans.kernels._utils import check_choice, kernel_size
from degtrans.kernels.pixel_kernels.cpu import apply_pixel_kernels_cpu
from degtrans.kernels.pixel_kernels.reference import apply_pixel_kernels_reference

_PADDINGS = ("zeros", "reflect")
_BACKENDS = ("auto", "reference", "cpu", "triton")


def _validate(x: torch.Tensor, kernels: torch.Tensor, padding: str, backend: str, dilation: int) -> None:
    name = "apply_pixel_kernels"
    if x.dim() != 4:
        raise ValueError(f"{name}: x must be (B, C, H, W), got {tuple(x.shape)}")
    if kernels.dim() not in (4, 5):
        raise ValueError(
            f"{name}: kernels must be (B, k*k, H, W) or (B, C, k*k, H, W), got {tuple(kernels.shape)}"
        )
    if not (x.is_floating_point() and kernels.is_floating_point()):
        raise ValueError(f"{name}: x and kernels must be floating point, got {x.dtype} and {kernels.dtype}")
    taps = kernels.shape[-3]
    k = kernel_size(taps)
    if k * k != taps or k % 2 == 0:
        raise ValueError(f"{name}: kernel taps {taps} is not the square of an odd k")
    same_channels = kernels.dim() == 4 or kernels.shape[1] == x.shape[1]
    if kernels.shape[-2:] != x.shape[-2:] or kernels.shape[0] != x.shape[0] or not same_channels:
        raise ValueError(f"{name}: kernels {tuple(kernels.shape)} do not match x {tuple(x.shape)}")
    if kernels.device != x.device:
        raise ValueError(f"{name}: x is on {x.device} but kernels on {kernels.device}")
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"{name}: dilation must be an integer >= 1, got {dilation!r}")
    check_choice(name, "padding", padding, _PADDINGS)
    check_choice(name, "backend", backend, _BACKENDS)


def apply_pixel_kernels(
    x: torch.Tensor,
    kernels: torch.Tensor,
    *,
    dilation: int = 1,
    padding: str = "zeros",
    backend: str = "auto",
) -> torch.Tensor:
    """``y(p) = sum_u K_p(u) x(p + d (u - c))`` with ``c = k // 2`` (kernel-prediction networks).

    Args:
        x: (B, C, H, W) image.
        kernels: (B, k*k, H, W) shared by all channels or (B, C, k*k, H, W) per channel, k odd;
            tap ``u = (i, j)`` is index ``i * k + j``. May be another dtype than ``x`` (bfloat16 kernels
            of an autocast network on a float32 image): the output has ``x``'s dtype.
        dilation: tap spacing ``d`` in pixels (a ``k x k`` kernel then reaches ``d * (k - 1) + 1``).
        padding: ``"zeros"`` or ``"reflect"`` (mirrored index by index where the halo is wider than the
            image).
        backend: ``"auto"`` (Triton on CUDA tensors, the CPU path otherwise), ``"reference"``, ``"cpu"``
            or ``"triton"``.

    Returns:
        (B, C, H, W), differentiable in ``x`` and ``kernels``.
    """
    _validate(x, kernels, padding, backend, dilation)
    if backend == "auto":
        backend = "triton" if x.is_cuda else "cpu"
    if backend == "reference":
        return apply_pixel_kernels_reference(x, kernels, padding=padding, dilation=dilation)
    if backend == "cpu":
        return apply_pixel_kernels_cpu(x, kernels, padding=padding, dilation=dilation)
    # Imported here so that importing degtrans.kernels never imports triton.
    from degtrans.kernels.pixel_kernels.autograd import apply_pixel_kernels_triton

    return apply_pixel_kernels_triton(x, kernels, padding=padding, dilation=dilation)


class PixelKernels(nn.Module):
    """:func:`apply_pixel_kernels` as a module (holds only ``dilation``, ``padding`` and ``backend``)."""

    def __init__(self, *, dilation: int = 1, padding: str = "zeros", backend: str = "auto") -> None:
        super().__init__()
        self.dilation = dilation
        self.padding = padding
        self.backend = backend

    def forward(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """``x: (B, C, H, W)``, ``kernels: (B, k*k, H, W)`` or ``(B, C, k*k, H, W)`` -> ``(B, C, H, W)``."""
        return apply_pixel_kernels(
            x, kernels, dilation=self.dilation, padding=self.padding, backend=self.backend
        )
