"""Triton helpers the kernels share: autotune configs (one block under the interpreter) and the 2-D
block grid, launched and decoded the same way by every image kernel."""

from __future__ import annotations

import triton
import triton.language as tl

from degtrans.kernels._utils import INTERPRET


def block_configs(candidates: list[tuple[int, int, int]]) -> list[triton.Config]:
    """Autotune configs from ``(BLOCK_H, BLOCK_W, num_warps)`` candidates; under the interpreter one
    32 x 32 block, because it runs every program in numpy (one large block is fastest, tuning is moot)."""
    if INTERPRET:
        candidates = [(32, 32, 4)]
    return [triton.Config({"BLOCK_H": bh, "BLOCK_W": bw}, num_warps=w) for bh, bw, w in candidates]


def launch_2d(kernel, rows: int, cols: int, programs: int, *args, **kwargs) -> None:
    """Launch ``kernel`` over ``rows x cols`` pixels in ``BLOCK_H x BLOCK_W`` blocks (axis 0, decoded by
    :func:`block_coords`) times ``programs`` (axis 1, e.g. batch x channels)."""

    def grid(meta):
        return (triton.cdiv(rows, meta["BLOCK_H"]) * triton.cdiv(cols, meta["BLOCK_W"]), programs)

    kernel[grid](*args, **kwargs)


@triton.jit
def block_coords(pid, rows, cols, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Rows ``y``, columns ``x`` and their in-range masks ``my``, ``mx`` of block ``pid`` of a grid
    launched by :func:`launch_2d` over ``rows x cols``; indices past the edge are set to 0, so that
    unmasked loads stay in bounds (stores are masked by the caller)."""
    n_bw = tl.cdiv(cols, BLOCK_W)
    y = (pid // n_bw) * BLOCK_H + tl.arange(0, BLOCK_H)
    x = (pid % n_bw) * BLOCK_W + tl.arange(0, BLOCK_W)
    my = y < rows
    mx = x < cols
    return tl.where(my, y, 0), tl.where(mx, x, 0), my, mx
