"""Triton kernels of per-pixel kernel application: forward, input gradient and kernel gradient.

On the image padded by ``h = d * (k // 2)`` (padding is done by torch outside, so autograd gives its
adjoint), with ``u`` a tap in ``[0, k)^2``, ``d`` the dilation and kernels ``K: (B, KC, k*k, H, W)`` where
``KC`` is 1 (shared by all channels) or ``C``:

* forward   ``y(p)       = sum_u K_p(u) x_pad(p + d u)``,
* adjoint   ``g_xpad(q)  = sum_u K_{q-du}(u) g_y(q - d u)``,
* kernels   ``g_K_p(u)   = sum_c g_y_c(p) x_pad_c(p + d u)`` (sum over the channels sharing the kernel).

The image and the kernels may have different dtypes (float32 images, bfloat16 kernels under autocast):
each is loaded as it is and the sums run in float32 (float64 for float64 images). The kernels' batch
stride ``KB`` is an argument, so one dilation's kernels can be a slice of all dilations' without a copy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from degtrans.kernels._triton_utils import block_configs, block_coords, launch_2d
from degtrans.kernels._utils import kernel_size

_CONFIGS = block_configs([(16, 32, 4), (32, 32, 4), (16, 64, 4), (32, 64, 8), (8, 128, 4)])


@triton.autotune(configs=_CONFIGS, key=["H", "W", "K"])
@triton.jit
def _pk_forward_kernel(
    xp_ptr, k_ptr, out_ptr, C, KC, KB, H, W, Hp, Wp, DIL,
    K: tl.constexpr, ACC_FP64: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    bc = tl.program_id(1)
    oy, ox, my, mx = block_coords(tl.program_id(0), H, W, BLOCK_H, BLOCK_W)
    inside = my[:, None] & mx[None, :]
    b = bc // C
    kc = (bc % C) % KC
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=acc_dtype)
    x_base = xp_ptr + bc.to(tl.int64) * Hp * Wp
    k_base = k_ptr + b.to(tl.int64) * KB + kc.to(tl.int64) * K * K * H * W + oy[:, None] * W + ox[None, :]
    for i in range(K):
        for j in range(K):
            xv = tl.load(x_base + (oy + i * DIL)[:, None] * Wp + (ox + j * DIL)[None, :]).to(acc_dtype)
            kv = tl.load(k_base + (i * K + j) * H * W).to(acc_dtype)
            acc += xv * kv
    out = out_ptr + bc.to(tl.int64) * H * W + oy[:, None] * W + ox[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=inside)


@triton.autotune(configs=_CONFIGS, key=["H", "W", "K"])
@triton.jit
def _pk_adjoint_kernel(
    gy_ptr, k_ptr, gxp_ptr, C, KC, KB, H, W, Hp, Wp, DIL,
    K: tl.constexpr, ACC_FP64: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    bc = tl.program_id(1)
    qy, qx, my, mx = block_coords(tl.program_id(0), Hp, Wp, BLOCK_H, BLOCK_W)
    b = bc // C
    kc = (bc % C) % KC
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=acc_dtype)
    g_base = gy_ptr + bc.to(tl.int64) * H * W
    k_base = k_ptr + b.to(tl.int64) * KB + kc.to(tl.int64) * K * K * H * W
    for i in range(K):
        py = qy - i * DIL
        vy = my & (py >= 0) & (py < H)
        for j in range(K):
            px = qx - j * DIL
            vx = mx & (px >= 0) & (px < W)
            valid = vy[:, None] & vx[None, :]
            offs = py[:, None] * W + px[None, :]
            gv = tl.load(g_base + offs, mask=valid, other=0.0).to(acc_dtype)
            kv = tl.load(k_base + (i * K + j) * H * W + offs, mask=valid, other=0.0).to(acc_dtype)
            acc += gv * kv
    out = gxp_ptr + bc.to(tl.int64) * Hp * Wp + qy[:, None] * Wp + qx[None, :]
    tl.store(out, acc.to(gxp_ptr.dtype.element_ty), mask=my[:, None] & mx[None, :])


@triton.autotune(configs=_CONFIGS, key=["H", "W", "K"])
@triton.jit
def _pk_kernel_grad_kernel(
    xp_ptr, gy_ptr, gk_ptr, C, KC, H, W, Hp, Wp, DIL,
    K: tl.constexpr, ACC_FP64: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    bk = tl.program_id(1)
    oy, ox, my, mx = block_coords(tl.program_id(0), H, W, BLOCK_H, BLOCK_W)
    inside = my[:, None] & mx[None, :]
    b = bk // KC
    kc = bk % KC
    # Channels sharing this kernel: all C when KC == 1, else channel kc only.
    c_start = kc
    c_count = C // KC
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    offs = oy[:, None] * W + ox[None, :]
    gk_base = gk_ptr + bk.to(tl.int64) * K * K * H * W + offs
    for i in range(K):
        for j in range(K):
            acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=acc_dtype)
            for cc in range(c_count):
                bc = (b * C + c_start + cc).to(tl.int64)
                gv = tl.load(gy_ptr + bc * H * W + offs).to(acc_dtype)
                rows = (oy + i * DIL)[:, None] * Wp
                xv = tl.load(xp_ptr + bc * Hp * Wp + rows + (ox + j * DIL)[None, :]).to(acc_dtype)
                acc += gv * xv
            tl.store(gk_base + (i * K + j) * H * W, acc.to(gk_ptr.dtype.element_ty), mask=inside)


def apply(
    image: torch.Tensor, kernels: torch.Tensor, dilation: int, pad_hw: tuple[int, int] | None = None
) -> torch.Tensor:
    """The forward ``(B, C, H, W)`` from ``image = x_pad: (B, C, H+2h, W+2h)``, or, given ``pad_hw``, the
    gradient ``(B, C, H+2h, W+2h)`` of the padded input from ``image = grad_out: (B, C, H, W)``; in
    ``image``'s dtype. ``kernels: (B, KC, k*k, H, W)``, contiguous but for the batch stride."""
    batch, channels = image.shape[:2]
    _, kc, taps, height, width = kernels.shape
    hp, wp = image.shape[-2:] if pad_hw is None else pad_hw
    out_hw = (height, width) if pad_hw is None else pad_hw
    out = torch.empty(batch, channels, *out_hw, dtype=image.dtype, device=image.device)
    launch_2d(
        _pk_forward_kernel if pad_hw is None else _pk_adjoint_kernel, *out_hw, batch * channels,
        image, kernels, out, channels, kc, kernels.stride(0), height, width, hp, wp, dilation,
        K=kernel_size(taps), ACC_FP64=image.dtype == torch.float64,
    )  # fmt: skip
    return out


def kernel_grad(
    x_pad: torch.Tensor, grad_out: torch.Tensor, kernels: torch.Tensor, dilation: int
) -> torch.Tensor:
    """``(B, KC, k*k, H, W)`` gradient of the kernels, contiguous, in their dtype."""
    batch, channels, hp, wp = x_pad.shape
    _, kc, taps, height, width = kernels.shape
    grad = torch.empty(kernels.shape, dtype=kernels.dtype, device=x_pad.device)
    k = kernel_size(taps)
    launch_2d(
        _pk_kernel_grad_kernel, height, width, batch * kc, x_pad, grad_out, grad,
        channels, kc, height, width, hp, wp, dilation, K=k, ACC_FP64=x_pad.dtype == torch.float64,
    )  # fmt: skip
    return grad
