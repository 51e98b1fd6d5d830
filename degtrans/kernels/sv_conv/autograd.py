"""The Triton backend of ``sv_conv2d``: one ``torch.autograd.Function`` over the three Triton kernels."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from degtrans.kernels._utils import pad_image, triton_dtype
from degtrans.kernels.sv_conv import _triton
from degtrans.kernels.sv_conv.cpu import axis_runs
from degtrans.kernels.weights import padded_positions, tile_lower_frac


class SVConvFunction(torch.autograd.Function):
    """``y = A(psfs) x_pad`` with Triton forward, adjoint (grad of ``x_pad``) and PSF-gradient kernels."""

    @staticmethod
    def forward(ctx, x_pad, psfs, tables, out_hw):
        x_pad = x_pad.contiguous()
        psfs = psfs.contiguous()
        ctx.save_for_backward(x_pad, psfs)
        ctx.tables = tables
        return _triton.apply(x_pad, psfs, tables, out_hw)

    @staticmethod
    @once_differentiable  # the Triton kernels have no backward: a second derivative fails loudly
    def backward(ctx, grad_out):
        x_pad, psfs = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_psfs = None
        if ctx.needs_input_grad[0]:
            grad_x = _triton.apply(grad_out, psfs, ctx.tables, tuple(x_pad.shape[-2:]), adjoint=True)
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
    # Per padded row (y) and column (x): tile lower/upper/frac, and the PSF-gradient blocks (4, n).
    tables = {}
    for i, (axis, kind, n_tiles) in enumerate((("y", "row", rows), ("x", "col", cols))):
        positions = padded_positions(x.shape[2 + i], halo, offset[i], frame[i], padding)
        lower, upper, frac = tile_lower_frac(positions, n_tiles, frame[i])
        runs = axis_runs(x.shape[2 + i], halo, offset[i], frame[i], n_tiles, padding)
        step = _triton.GRAD_BLOCK
        blocks = [(s, min(s + step, b), lo, up) for a, b, (lo, up) in runs for s in range(a, b, step)]
        tables[f"l{axis}"] = lower.to(device=x.device, dtype=torch.int32)
        tables[f"u{axis}"] = upper.to(device=x.device, dtype=torch.int32)
        tables[f"f{axis}"] = frac.to(device=x.device, dtype=frac_dtype)
        tables[f"{kind}_blocks"] = torch.tensor(blocks, dtype=torch.int32, device=x.device).T.contiguous()
    x_pad = pad_image(x.to(work), halo, padding)
    out = SVConvFunction.apply(x_pad, field_psfs.to(work), tables, (height, width))
    return out.to(x.dtype)
