"""Triton kernels of the spatially variant PSF convolution: forward, input gradient (adjoint), PSF gradient.

All three work on the image padded by the halo ``h = k // 2`` (padding is done by torch outside, so its
adjoint comes from autograd) and on the per-axis interpolation tables of the padded positions
(``lower``, ``upper``, ``frac``: see :func:`degtrans.kernels.weights.tile_lower_frac`). With
``q = p + d`` a padded position and ``d`` in ``[0, k)^2``:

* forward   ``y(p)       = sum_d x_pad(q) h_q[k-1-d]`` (gather form of the scatter model),
* adjoint   ``g_xpad(q)  = sum_d g_y(q - d) h_q[k-1-d]`` (correlation with each pixel's own PSF),
* PSF grad  ``g_h_t[k-1-d] = sum_q w_t(q) x_pad(q) g_y(q - d)``,

where ``h_q = sum_t w_t(q) h_t`` is interpolated on the fly from the (at most 4) tile PSFs of ``q``.
Each program owns a ``BLOCK_H x BLOCK_W`` tile of one image channel; shifted loads of the same tile stay
in L1/L2, and the tile PSFs it touches are a few KiB. The PSF-gradient programs are laid out so that
each block lies in one run of constant active tiles: it reduces its contributions to 4 scalars per tap
and adds them atomically.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from degtrans.kernels._triton_utils import block_configs, block_coords, launch_2d
from degtrans.kernels._utils import INTERPRET

_CONFIGS = block_configs([(16, 32, 4), (32, 32, 4), (32, 32, 8), (16, 64, 4), (32, 64, 8), (8, 128, 4)])
GRAD_BLOCK = 32
_INTERPOLATION = ("ly", "uy", "fy", "lx", "ux", "fx")  # the tables the forward and adjoint kernels read
_GRAD_CONFIGS = [triton.Config({}, num_warps=w) for w in ((4,) if INTERPRET else (4, 8))]


@triton.jit
def _interp_psf(psf_ptr, tap, c, C, cols, ly, uy, fy, lx, ux, fx, K: tl.constexpr):
    """Tap ``tap`` of channel ``c``'s PSF interpolated with tables (ly, uy, fy) x (lx, ux, fx)."""
    kk = K * K
    h00 = tl.load(psf_ptr + ((ly[:, None] * cols + lx[None, :]) * C + c) * kk + tap)
    h01 = tl.load(psf_ptr + ((ly[:, None] * cols + ux[None, :]) * C + c) * kk + tap)
    h10 = tl.load(psf_ptr + ((uy[:, None] * cols + lx[None, :]) * C + c) * kk + tap)
    h11 = tl.load(psf_ptr + ((uy[:, None] * cols + ux[None, :]) * C + c) * kk + tap)
    gy = fy[:, None]
    gx = fx[None, :]
    top = h00 + (h01 - h00) * gx
    bottom = h10 + (h11 - h10) * gx
    return top + (bottom - top) * gy


@triton.autotune(configs=_CONFIGS, key=["H", "W", "K"])
@triton.jit
def _sv_forward_kernel(
    xp_ptr, psf_ptr, ly_ptr, uy_ptr, fy_ptr, lx_ptr, ux_ptr, fx_ptr, out_ptr,
    C, H, W, Hp, Wp, cols,
    K: tl.constexpr, ACC_FP64: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    bc = tl.program_id(1)
    oy, ox, my, mx = block_coords(tl.program_id(0), H, W, BLOCK_H, BLOCK_W)
    c = bc % C
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=acc_dtype)
    x_base = xp_ptr + bc.to(tl.int64) * Hp * Wp
    for i in range(K):
        qy = tl.where(my, oy + i, 0)
        ly = tl.load(ly_ptr + qy)
        uy = tl.load(uy_ptr + qy)
        fy = tl.load(fy_ptr + qy).to(acc_dtype)
        for j in range(K):
            qx = tl.where(mx, ox + j, 0)
            lx = tl.load(lx_ptr + qx)
            ux = tl.load(ux_ptr + qx)
            fx = tl.load(fx_ptr + qx).to(acc_dtype)
            xv = tl.load(x_base + qy[:, None] * Wp + qx[None, :]).to(acc_dtype)
            tap = (K - 1 - i) * K + (K - 1 - j)
            h = _interp_psf(psf_ptr, tap, c, C, cols, ly, uy, fy, lx, ux, fx, K).to(acc_dtype)
            acc += xv * h
    out = out_ptr + bc.to(tl.int64) * H * W + oy[:, None] * W + ox[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=my[:, None] & mx[None, :])


@triton.autotune(configs=_CONFIGS, key=["H", "W", "K"])
@triton.jit
def _sv_adjoint_kernel(
    gy_ptr, psf_ptr, ly_ptr, uy_ptr, fy_ptr, lx_ptr, ux_ptr, fx_ptr, gxp_ptr,
    C, H, W, Hp, Wp, cols,
    K: tl.constexpr, ACC_FP64: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    bc = tl.program_id(1)
    qy, qx, my, mx = block_coords(tl.program_id(0), Hp, Wp, BLOCK_H, BLOCK_W)
    c = bc % C
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    ly = tl.load(ly_ptr + qy)
    uy = tl.load(uy_ptr + qy)
    fy = tl.load(fy_ptr + qy).to(acc_dtype)
    lx = tl.load(lx_ptr + qx)
    ux = tl.load(ux_ptr + qx)
    fx = tl.load(fx_ptr + qx).to(acc_dtype)
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=acc_dtype)
    g_base = gy_ptr + bc.to(tl.int64) * H * W
    for i in range(K):
        py = qy - i
        vy = my & (py >= 0) & (py < H)
        for j in range(K):
            px = qx - j
            vx = mx & (px >= 0) & (px < W)
            valid = vy[:, None] & vx[None, :]
            gv = tl.load(g_base + py[:, None] * W + px[None, :], mask=valid, other=0.0).to(acc_dtype)
            tap = (K - 1 - i) * K + (K - 1 - j)
            h = _interp_psf(psf_ptr, tap, c, C, cols, ly, uy, fy, lx, ux, fx, K).to(acc_dtype)
            acc += gv * h
    out = gxp_ptr + bc.to(tl.int64) * Hp * Wp + qy[:, None] * Wp + qx[None, :]
    tl.store(out, acc.to(gxp_ptr.dtype.element_ty), mask=my[:, None] & mx[None, :])


@triton.autotune(configs=_GRAD_CONFIGS, key=["H", "W", "K"], reset_to_zero=["gpsf_ptr"])
@triton.jit
def _sv_psf_grad_kernel(
    xp_ptr, gy_ptr, fy_ptr, fx_ptr, gpsf_ptr,
    rb_start, rb_stop, rb_lower, rb_upper, cb_start, cb_stop, cb_lower, cb_upper,
    C, H, W, Hp, Wp, cols,
    K: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    rb = tl.program_id(0)
    cb = tl.program_id(1)
    bc = tl.program_id(2)
    c = bc % C
    y0 = tl.load(rb_start + rb)
    y1 = tl.load(rb_stop + rb)
    x0 = tl.load(cb_start + cb)
    x1 = tl.load(cb_stop + cb)
    ly = tl.load(rb_lower + rb)
    uy = tl.load(rb_upper + rb)
    lx = tl.load(cb_lower + cb)
    ux = tl.load(cb_upper + cb)
    qy = y0 + tl.arange(0, BLOCK)
    qx = x0 + tl.arange(0, BLOCK)
    my = qy < y1
    mx = qx < x1
    qy = tl.where(my, qy, 0)
    qx = tl.where(mx, qx, 0)
    acc_dtype = gpsf_ptr.dtype.element_ty
    fy = tl.load(fy_ptr + qy).to(acc_dtype)
    fx = tl.load(fx_ptr + qx).to(acc_dtype)
    inside = my[:, None] & mx[None, :]
    xv = tl.load(xp_ptr + bc.to(tl.int64) * Hp * Wp + qy[:, None] * Wp + qx[None, :], mask=inside, other=0.0)
    xv = xv.to(acc_dtype)
    # Separable corner weights of the block's 4 tiles, folded into the input once.
    x00 = xv * ((1.0 - fy)[:, None] * (1.0 - fx)[None, :])
    x01 = xv * ((1.0 - fy)[:, None] * fx[None, :])
    x10 = xv * (fy[:, None] * (1.0 - fx)[None, :])
    x11 = xv * (fy[:, None] * fx[None, :])
    kk = K * K
    g_base = gy_ptr + bc.to(tl.int64) * H * W
    for i in range(K):
        py = qy - i
        vy = my & (py >= 0) & (py < H)
        for j in range(K):
            px = qx - j
            vx = mx & (px >= 0) & (px < W)
            valid = vy[:, None] & vx[None, :]
            gv = tl.load(g_base + py[:, None] * W + px[None, :], mask=valid, other=0.0).to(acc_dtype)
            tap = (K - 1 - i) * K + (K - 1 - j)
            tl.atomic_add(gpsf_ptr + ((ly * cols + lx) * C + c) * kk + tap, tl.sum(x00 * gv))
            tl.atomic_add(gpsf_ptr + ((ly * cols + ux) * C + c) * kk + tap, tl.sum(x01 * gv))
            tl.atomic_add(gpsf_ptr + ((uy * cols + lx) * C + c) * kk + tap, tl.sum(x10 * gv))
            tl.atomic_add(gpsf_ptr + ((uy * cols + ux) * C + c) * kk + tap, tl.sum(x11 * gv))


def apply(
    image: torch.Tensor, psfs: torch.Tensor, tables: dict, out_hw: tuple[int, int], adjoint: bool = False
) -> torch.Tensor:
    """The forward ``(B, C, H, W)`` from ``image = x_pad: (B, C, H+2h, W+2h)``, or with ``adjoint`` the
    gradient ``(B, C, H+2h, W+2h)`` of the padded input from ``image = grad_out: (B, C, H, W)``;
    ``psfs: (rows, cols, C, k, k)``, ``out_hw`` the output's (H, W)."""
    batch, channels = image.shape[:2]
    (height, width), (hp, wp) = (image.shape[-2:], out_hw) if adjoint else (out_hw, image.shape[-2:])
    out = torch.empty(batch, channels, *out_hw, dtype=image.dtype, device=image.device)
    launch_2d(
        _sv_adjoint_kernel if adjoint else _sv_forward_kernel, *out_hw, batch * channels,
        image, psfs, *(tables[n] for n in _INTERPOLATION), out, channels, height, width, hp, wp,
        psfs.shape[1], K=psfs.shape[-1], ACC_FP64=image.dtype == torch.float64,
    )  # fmt: skip
    return out


def psf_grad(
    x_pad: torch.Tensor, grad_out: torch.Tensor, psf_shape: tuple[int, ...], tables: dict
) -> torch.Tensor:
    """``(rows, cols, C, k, k)`` PSF gradient, accumulated in float32 (float64 for float64 inputs)."""
    batch, channels, hp, wp = x_pad.shape
    height, width = grad_out.shape[-2:]
    acc = torch.float64 if x_pad.dtype == torch.float64 else torch.float32
    gpsf = torch.zeros(psf_shape, dtype=acc, device=x_pad.device)
    rows_b, cols_b = tables["row_blocks"], tables["col_blocks"]
    grid = (rows_b.shape[1], cols_b.shape[1], batch * channels)
    _sv_psf_grad_kernel[grid](
        x_pad, grad_out, tables["fy"], tables["fx"], gpsf,
        rows_b[0], rows_b[1], rows_b[2], rows_b[3], cols_b[0], cols_b[1], cols_b[2], cols_b[3],
        channels, height, width, hp, wp, psf_shape[1],
        K=psf_shape[-1], BLOCK=GRAD_BLOCK,
    )  # fmt: skip
    return gpsf
