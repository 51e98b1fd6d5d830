"""Triton kernels of modulated deformable convolution (DCNv2): sampling (im2col) and its adjoints.

Layouts (``G`` offset groups, ``Cg = Cin / G`` channels each, ``T = k * k`` taps, ``P = H * W``):
``x: (B*G, Cg, P)``, ``offset: (B*G, T, 2, P)`` (dy, dx in pixels), ``mask: (B*G, T, P)``,
``cols: (B*G, Cg, T, P)``. Tap ``t`` of output pixel ``p = (h, w)`` samples ``x`` bilinearly at
``(h + (t // k - k // 2) * dil + dy, w + (t % k - k // 2) * dil + dx)``, zero outside the image:

* forward  ``cols[c, t, p] = m[t, p] * bilinear(x[c], s(t, p))``,
* adjoint  ``g_x[c, q]   += m[t, p] * g_cols[c, t, p] * w_q(s(t, p))`` (atomic: taps overlap),
* offsets  ``g_dy[t, p]   = m[t, p] * sum_c g_cols[c, t, p] * d bilinear / dy`` (and ``dx``),
* mask     ``g_m[t, p]    = sum_c g_cols[c, t, p] * bilinear(x[c], s(t, p))``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 64


@triton.jit
def _corners(x_base, sy, sx, H, W, valid):
    """Bilinear corner values (zero outside) and fractions at sample points ``(sy, sx)``."""
    y0f = tl.floor(sy)
    x0f = tl.floor(sx)
    ly = sy - y0f
    lx = sx - x0f
    y0 = y0f.to(tl.int32)
    x0 = x0f.to(tl.int32)
    y1 = y0 + 1
    x1 = x0 + 1
    in_y0 = (y0 >= 0) & (y0 < H)
    in_y1 = (y1 >= 0) & (y1 < H)
    in_x0 = (x0 >= 0) & (x0 < W)
    in_x1 = (x1 >= 0) & (x1 < W)
    v00 = tl.load(x_base + y0 * W + x0, mask=valid & in_y0 & in_x0, other=0.0).to(tl.float32)
    v01 = tl.load(x_base + y0 * W + x1, mask=valid & in_y0 & in_x1, other=0.0).to(tl.float32)
    v10 = tl.load(x_base + y1 * W + x0, mask=valid & in_y1 & in_x0, other=0.0).to(tl.float32)
    v11 = tl.load(x_base + y1 * W + x1, mask=valid & in_y1 & in_x1, other=0.0).to(tl.float32)
    return v00, v01, v10, v11, ly, lx


@triton.jit
def _program(off_ptr, m_ptr, H, W, T, DIL, K: tl.constexpr, BLOCK: tl.constexpr):
    """This program's group row ``bg``, tap ``t``, pixels ``p``, sample points and modulation."""
    bgt = tl.program_id(0)
    bg = bgt // T
    t = bgt % T
    p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = p < H * W
    base = off_ptr + (bg.to(tl.int64) * T + t) * 2 * H * W
    dy = tl.load(base + p, mask=valid, other=0.0).to(tl.float32)
    dx = tl.load(base + H * W + p, mask=valid, other=0.0).to(tl.float32)
    sy = (p // W).to(tl.float32) + ((t // K) - K // 2) * DIL + dy
    sx = (p % W).to(tl.float32) + ((t % K) - K // 2) * DIL + dx
    m = tl.load(m_ptr + (bg.to(tl.int64) * T + t) * H * W + p, mask=valid, other=0.0).to(tl.float32)
    return bg, t, p, valid, sy, sx, m


@triton.jit
def _im2col_kernel(x_ptr, off_ptr, m_ptr, col_ptr, CG, H, W, T, DIL, K: tl.constexpr, BLOCK: tl.constexpr):
    bg, t, p, valid, sy, sx, m = _program(off_ptr, m_ptr, H, W, T, DIL, K, BLOCK)
    for c in range(CG):
        x_base = x_ptr + (bg.to(tl.int64) * CG + c) * H * W
        v00, v01, v10, v11, ly, lx = _corners(x_base, sy, sx, H, W, valid)
        value = (1 - ly) * ((1 - lx) * v00 + lx * v01) + ly * ((1 - lx) * v10 + lx * v11)
        out = col_ptr + ((bg.to(tl.int64) * CG + c) * T + t) * H * W + p
        tl.store(out, (m * value).to(col_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _col2im_kernel(
    x_ptr, off_ptr, m_ptr, gcol_ptr, gx_ptr, goff_ptr, gm_ptr, CG, H, W, T, DIL,
    K: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    bg, t, p, valid, sy, sx, m = _program(off_ptr, m_ptr, H, W, T, DIL, K, BLOCK)
    y0 = tl.floor(sy).to(tl.int32)
    x0 = tl.floor(sx).to(tl.int32)
    g_dy = tl.zeros((BLOCK,), dtype=tl.float32)
    g_dx = tl.zeros((BLOCK,), dtype=tl.float32)
    g_m = tl.zeros((BLOCK,), dtype=tl.float32)
    for c in range(CG):
        row = (bg.to(tl.int64) * CG + c) * H * W
        v00, v01, v10, v11, ly, lx = _corners(x_ptr + row, sy, sx, H, W, valid)
        g = tl.load(gcol_ptr + ((bg.to(tl.int64) * CG + c) * T + t) * H * W + p, mask=valid, other=0.0)
        g = g.to(tl.float32)
        value = (1 - ly) * ((1 - lx) * v00 + lx * v01) + ly * ((1 - lx) * v10 + lx * v11)
        g_m += g * value
        gm = g * m
        g_dy += gm * ((1 - lx) * (v10 - v00) + lx * (v11 - v01))
        g_dx += gm * ((1 - ly) * (v01 - v00) + ly * (v11 - v10))
        for corner in range(4):
            cy = y0 + corner // 2
            cx = x0 + corner % 2
            wy = tl.where(corner // 2 == 1, ly, 1 - ly)
            wx = tl.where(corner % 2 == 1, lx, 1 - lx)
            inside = valid & (cy >= 0) & (cy < H) & (cx >= 0) & (cx < W)
            tl.atomic_add(gx_ptr + row + cy * W + cx, gm * wy * wx, mask=inside)
    base = goff_ptr + (bg.to(tl.int64) * T + t) * 2 * H * W
    tl.store(base + p, g_dy, mask=valid)
    tl.store(base + H * W + p, g_dx, mask=valid)
    tl.store(gm_ptr + (bg.to(tl.int64) * T + t) * H * W + p, g_m, mask=valid)


def deform_im2col(
    x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, k: int, dilation: int
) -> torch.Tensor:
    """x: (B, Cin, H, W), offset: (B, 2*G*T, H, W), mask: (B, G*T, H, W) -> cols (B, Cin, T, H, W)."""
    batch, cin, height, width = x.shape
    taps = k * k
    groups = offset.shape[1] // (2 * taps)
    x, offset, mask = x.contiguous(), offset.contiguous(), mask.contiguous()
    cols = torch.empty((batch, cin, taps, height, width), dtype=x.dtype, device=x.device)
    grid = (batch * groups * taps, triton.cdiv(height * width, BLOCK))
    _im2col_kernel[grid](
        x, offset, mask, cols, cin // groups, height, width, taps, dilation, K=k, BLOCK=BLOCK
    )
    return cols


def deform_col2im(
    x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, grad_cols: torch.Tensor, k: int, dilation: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adjoints of :func:`deform_im2col`: gradients of x, offset and mask (float32 accumulation)."""
    batch, cin, height, width = x.shape
    taps = k * k
    groups = offset.shape[1] // (2 * taps)
    x, offset, mask, grad_cols = (
        x.contiguous(),
        offset.contiguous(),
        mask.contiguous(),
        grad_cols.contiguous(),
    )
    grad_x = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    grad_offset = torch.empty(offset.shape, dtype=torch.float32, device=x.device)
    grad_mask = torch.empty(mask.shape, dtype=torch.float32, device=x.device)
    grid = (batch * groups * taps, triton.cdiv(height * width, BLOCK))
    _col2im_kernel[grid](
        x, offset, mask, grad_cols, grad_x, grad_offset, grad_mask,
        cin // groups, height, width, taps, dilation, K=k, BLOCK=BLOCK,
    )  # fmt: skip
    return grad_x.to(x.dtype), grad_offset.to(offset.dtype), grad_mask.to(mask.dtype)
