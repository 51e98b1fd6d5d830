"""The Triton backend of ``sv_conv2d``: one ``torch.autograd.Function`` over the three Triton kernels."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from degtrans.kernels._utils import pad_image, triton_dtype
from degtrans.kernels.sv_conv import _triton
from degtrans.kernels.sv_conv.cpu import axis_runs
from degtrans.kernels.weights import padded_positions, tile_lower_frac


def _axis_tables(length, halo, offset, frame_len, n_tiles, padding, frac_dtype, device):
    positions = padded_positions(length, halo, offset, frame_len, padding)
    lower, upper, frac = tile_lower_frac(positions, n_tiles, frame_len)
    blocks = [
        (start, min(start + _triton.GRAD_BLOCK, b), lo, up)
        for a, b, (lo, up) in axis_runs(length, halo, offset, frame_len, n_tiles, padding)
        for start in range(a, b, _triton.GRAD_BLOCK)
    ]
    return (
        lower.to(device=device, dtype=torch.int32),
        upper.to(device=device, dtype=torch.int32),
        frac.to(device=device, dtype=frac_dtype),
        torch.tensor(blocks, dtype=torch.int32, device=device).T.contiguous(),
    )


def interpolation_tables(
    shape: tuple[int, int],
    grid: tuple[int, int],
    halo: int,
    offset: tuple[int, int],
    frame_size: tuple[int, int],
    padding: str,
    frac_dtype: torch.dtype,
    device: torch.device,
) -> dict:
    """Per padded row/column: tile ``lower``/``upper``/``frac``, and the PSF-gradient blocks ``(4, n)``."""
    ly, uy, fy, row_blocks = _axis_tables(
        shape[0], halo, offset[0], frame_size[0], grid[0], padding, frac_dtype, device
    )
    lx, ux, fx, col_blocks = _axis_tables(
        shape[1], halo, offset[1], frame_size[1], grid[1], padding, frac_dtype, device
    )
    return {
        "ly": ly, "uy": uy, "fy": fy, "lx": lx, "ux": ux, "fx": fx,
        "row_blocks": row_blocks, "col_blocks": col_blocks,
    }  # fmt: skip


class SVConvFunction(torch.autograd.Function):
    """``y = A(psfs) x_pad`` with Triton forward, adjoint (grad of ``x_pad``) and PSF-gradient kernels."""

    @staticmethod
    def forward(ctx, x_pad, psfs, tables, out_hw):
        x_pad = x_pad.contiguous()
        psfs = psfs.contiguous()
        ctx.save_for_backward(x_pad, psfs)
        ctx.tables = tables
        return _triton.forward(x_pad, psfs, tables, out_hw)

    @staticmethod
    @once_differentiable  # the Triton kernels have no backward: a second derivative fails loudly
    def backward(ctx, grad_out):
        x_pad, psfs = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_psfs = None
        if ctx.needs_input_grad[0]:
            grad_x = _triton.adjoint(grad_out, psfs, ctx.tables, tuple(x_pad.shape[-2:]))
        if ctx.needs_input_grad[1]:
            grad_psfs = _triton.psf_grad(x_pad, grad_out, tuple(psfs.shape), ctx.tables).to(psfs.dtype)
        return grad_x, grad_psfs, None, None


def sv_conv2d_triton(
    x: torch.Tensor,
    field_psfs: torch.Tensor,
    *,
    offset: tuple[int, int] = (0, 0),
    frame_size: tuple[int, int] | None = None,
    padding: str = "reflect",
) -> torch.Tensor:
    """Triton implementation of :func:`degtrans.kernels.sv_conv2d` (same arguments and semantics)."""
    rows, cols, _, k, _ = field_psfs.shape
    halo = k // 2
    height, width = x.shape[-2:]
    frame = tuple(frame_size) if frame_size is not None else (height, width)
    work = triton_dtype(x.dtype)
    frac_dtype = torch.float64 if work == torch.float64 else torch.float32
    tables = interpolation_tables(
        (height, width), (rows, cols), halo, offset, frame, padding, frac_dtype, x.device
    )
    x_pad = pad_image(x.to(work), halo, padding)
    out = SVConvFunction.apply(x_pad, field_psfs.to(work), tables, (height, width))
    return out.to(x.dtype)
