"""Spatially variant PSF convolution: dispatch between the reference, the CPU path and Triton."""

from __future__ import annotations

import torch
from torch import nn

from degtrans.kernels._utils import check_choice
from degtrans.kernels.sv_conv.cpu import sv_conv2d_cpu
from degtrans.kernels.sv_conv.reference import sv_conv2d_reference

_PADDINGS = ("reflect", "zeros")
_BACKENDS = ("auto", "reference", "cpu", "triton")


def _validate(
    x: torch.Tensor,
    field_psfs: torch.Tensor,
    offset: tuple[int, int],
    frame_size: tuple[int, int] | None,
    padding: str,
    backend: str,
) -> None:
    if x.dim() != 4:
        raise ValueError(f"sv_conv2d: x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if not (x.is_floating_point() and field_psfs.is_floating_point()):
        raise ValueError(
            f"sv_conv2d: x and field_psfs must be floating point, got {x.dtype} and {field_psfs.dtype}"
        )
    if field_psfs.dim() != 5 or field_psfs.shape[-1] != field_psfs.shape[-2]:
        raise ValueError(
            f"sv_conv2d: field_psfs must be (rows, cols, C, k, k), got shape {tuple(field_psfs.shape)}"
        )
    if field_psfs.shape[-1] % 2 == 0:
        raise ValueError(f"sv_conv2d: PSF size k must be odd, got {field_psfs.shape[-1]}")
    if field_psfs.shape[2] != x.shape[1]:
        raise ValueError(f"sv_conv2d: field has {field_psfs.shape[2]} channels but x has {x.shape[1]}")
    if field_psfs.device != x.device:
        raise ValueError(f"sv_conv2d: x is on {x.device} but field_psfs on {field_psfs.device}")
    height, width = x.shape[-2:]
    frame = tuple(frame_size) if frame_size is not None else (height, width)
    if len(frame) != 2 or len(offset) != 2:
        raise ValueError(f"sv_conv2d: offset and frame_size must be pairs, got {offset}, {frame_size}")
    inside_y = 0 <= offset[0] and offset[0] + height <= frame[0]
    inside_x = 0 <= offset[1] and offset[1] + width <= frame[1]
    if not (inside_y and inside_x):
        raise ValueError(
            f"sv_conv2d: patch of size {(height, width)} at offset {tuple(offset)} "
            f"lies outside frame_size {frame}"
        )
    check_choice("sv_conv2d", "padding", padding, _PADDINGS)
    check_choice("sv_conv2d", "backend", backend, _BACKENDS)


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
        backend: ``"auto"`` (Triton on CUDA tensors, the CPU path otherwise), ``"reference"``, ``"cpu"``
            (the support-restricted product convolution, any device) or ``"triton"``.

    Returns:
        (B, C, H, W) blurred image, differentiable in ``x`` and ``field_psfs``.
    """
    _validate(x, field_psfs, offset, frame_size, padding, backend)
    offset = (int(offset[0]), int(offset[1]))
    if backend == "auto":
        backend = "triton" if x.is_cuda else "cpu"
    if backend == "reference":
        return sv_conv2d_reference(x, field_psfs, offset=offset, frame_size=frame_size, padding=padding)
    if backend == "cpu":
        return sv_conv2d_cpu(x, field_psfs, offset=offset, frame_size=frame_size, padding=padding)
    # Imported here so that importing degtrans.kernels never imports triton.
    from degtrans.kernels.sv_conv.autograd import sv_conv2d_triton

    return sv_conv2d_triton(x, field_psfs, offset=offset, frame_size=frame_size, padding=padding)


class SVConv2d(nn.Module):
    """:func:`sv_conv2d` with the field held by the module (a buffer, or a parameter to learn it).

    Args:
        field_psfs: (rows, cols, C, k, k) PSFs of the tile centres.
        frame_size: (H, W) of the sensor frame; ``None`` means each input is a whole frame.
        padding: ``"reflect"`` or ``"zeros"``.
        backend: see :func:`sv_conv2d`.
        learnable: register the PSFs as an ``nn.Parameter`` (calibration by gradient descent).
    """

    def __init__(
        self,
        field_psfs: torch.Tensor,
        *,
        frame_size: tuple[int, int] | None = None,
        padding: str = "reflect",
        backend: str = "auto",
        learnable: bool = False,
    ) -> None:
        super().__init__()
        psfs = torch.as_tensor(field_psfs).detach().clone()
        if learnable:
            self.psfs = nn.Parameter(psfs)
        else:
            self.register_buffer("psfs", psfs)
        self.frame_size = frame_size
        self.padding = padding
        self.backend = backend

    def forward(self, x: torch.Tensor, offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """Blur ``x: (B, C, H, W)`` whose top-left pixel sits at ``offset`` on the sensor."""
        return sv_conv2d(
            x,
            self.psfs,
            offset=offset,
            frame_size=self.frame_size,
            padding=self.padding,
            backend=self.backend,
        )
