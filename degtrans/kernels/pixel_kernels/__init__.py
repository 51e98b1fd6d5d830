"""Per-pixel kernel application: dispatch between the reference, the CPU path and Triton."""

from __future__ import annotations

import torch

from degtrans.kernels.pixel_kernels.reference import apply_pixel_kernels_reference


def apply_pixel_kernels(
    x: torch.Tensor, kernels: torch.Tensor, *, padding: str = "zeros", backend: str = "auto"
) -> torch.Tensor:
    """``y(p) = sum_u K_p(u) x(p + u - c)``.

    Args:
        x: (B, C, H, W) image.
        kernels: (B, k*k, H, W) or (B, C, k*k, H, W), k odd.
        padding: ``"zeros"`` or ``"reflect"``.
        backend: ``"auto"``, ``"reference"``, ``"cpu"`` or ``"triton"``.

    Returns:
        (B, C, H, W).
    """
    if x.dim() != 4:
        raise ValueError(f"apply_pixel_kernels: x must be (B, C, H, W), got {tuple(x.shape)}")
    if kernels.dim() not in (4, 5):
        raise ValueError(
            f"apply_pixel_kernels: kernels must be (B, k*k, H, W) or (B, C, k*k, H, W), got {tuple(kernels.shape)}"
        )
    taps = kernels.shape[-3]
    k = int(round(taps**0.5))
    if k * k != taps or k % 2 == 0:
        raise ValueError(f"apply_pixel_kernels: kernel taps {taps} is not the square of an odd k")
    if kernels.shape[-2:] != x.shape[-2:] or kernels.shape[0] != x.shape[0]:
        raise ValueError(
            f"apply_pixel_kernels: kernels {tuple(kernels.shape)} do not match x {tuple(x.shape)}"
        )
    return apply_pixel_kernels_reference(x, kernels, padding=padding)
