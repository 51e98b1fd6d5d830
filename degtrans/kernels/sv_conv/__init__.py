"""Spatially variant PSF convolution: dispatch between the reference, the CPU path and Triton."""

from __future__ import annotations

import torch

from degtrans.kernels.sv_conv.reference import sv_conv2d_reference

_PADDINGS = ("reflect", "zeros")
_BACKENDS = ("auto", "reference", "cpu", "triton")


def _validate(x: torch.Tensor, field_psfs: torch.Tensor, padding: str, backend: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"sv_conv2d: x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if field_psfs.dim() != 5 or field_psfs.shape[-1] != field_psfs.shape[-2]:
        raise ValueError(
            f"sv_conv2d: field_psfs must be (rows, cols, C, k, k), got shape {tuple(field_psfs.shape)}"
        )
    if field_psfs.shape[-1] % 2 == 0:
        raise ValueError(f"sv_conv2d: PSF size k must be odd, got {field_psfs.shape[-1]}")
    if field_psfs.shape[2] != x.shape[1]:
        raise ValueError(
            f"sv_conv2d: field has {field_psfs.shape[2]} channels but x has {x.shape[1]}"
        )
    if padding not in _PADDINGS:
        raise ValueError(f"sv_conv2d: padding must be one of {_PADDINGS}, got {padding!r}")
    if backend not in _BACKENDS:
        raise ValueError(f"sv_conv2d: backend must be one of {_BACKENDS}, got {backend!r}")


def sv_conv2d(
    x: torch.Tensor,
    field_psfs: torch.Tensor,
    *,
    offset: tuple[int, int] = (0, 0),
    frame_size: tuple[int, int] | None = None,
    padding: str = "reflect",
    backend: str = "auto",
) -> torch.Tensor:
    """Blur ``x`` with a spatially variant PSF field (scatter model).

    ``y(p) = sum_q x(q) h_q(p - q)``, ``h_q`` bilinearly interpolated between tile centres.

    Args:
        x: (B, C, H, W) image in linear intensities.
        field_psfs: (rows, cols, C, k, k) PSFs of the tile centres (``PSFField.psfs``), k odd.
        offset: (y0, x0) of the patch on the sensor, for patches cut from a larger frame.
        frame_size: (H, W) of the sensor frame; defaults to ``x``'s own size.
        padding: ``"reflect"`` (mirror pixels use the PSF of their mirror) or ``"zeros"``.
        backend: ``"auto"``, ``"reference"``, ``"cpu"`` or ``"triton"``.

    Returns:
        (B, C, H, W) blurred image, differentiable in ``x`` and ``field_psfs``.
    """
    _validate(x, field_psfs, padding, backend)
    return sv_conv2d_reference(x, field_psfs, offset=offset, frame_size=frame_size, padding=padding)
