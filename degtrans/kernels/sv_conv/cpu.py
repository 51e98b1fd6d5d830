"""Fast CPU path of the spatially variant PSF convolution: product-convolution restricted to weight supports.

The bilinear weights are separable and piecewise linear, so the padded input splits into blocks (runs of
rows times runs of columns) in which at most 2 x 2 tiles have non-zero weight (runs shorter than the PSF
are merged, so a block may carry more). Each block is convolved with its own few PSFs only (its "full"
convolution covers the block plus the PSF halo) and the results are overlap-added: every pixel pays
for about 4 convolutions instead of ``rows * cols`` as in the reference. A block is convolved directly
(one depthwise ``F.conv2d``) when k is small and through real FFTs when k is large; a cost model picks
per call. Plain torch ops (plus an overlap-add whose backward is a set of views), so autograd gives
the gradients in ``x`` and in the PSFs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from degtrans.kernels._utils import pad_image
from degtrans.kernels.spectral import fast_fft_len, kernel_spectrum
from degtrans.kernels.sv_conv.reference import padded_tile_weights
from degtrans.kernels.weights import constant_runs, padded_positions, tile_lower_frac

Method = Literal["auto", "direct", "fft"]

# Cost of one FFT element per log2 level, in units of one direct multiply-add: fitted on a 2-core x86 CPU
# with torch 2.13 (oneDNN depthwise convolution vs. pocketfft, one thread), where direct and FFT break
# even at k = 13..17 for tiles of 32..64 pixels. benchmarks/sv_conv.py times both methods to re-check.
_FFT_COST_PER_LOG_ELEMENT = 24.0


@dataclass(frozen=True)
class TileBlock:
    """A rectangle of the padded input in which only the tiles ``tiles`` have non-zero weight."""

    rows: tuple[int, int]
    cols: tuple[int, int]
    tiles: tuple[tuple[int, int], ...]


def axis_runs(
    length: int, halo: int, offset: int, frame_len: int, n_tiles: int, padding: str
) -> list[tuple[int, int, tuple[int, int]]]:
    """Runs ``(start, stop, (lower, upper))`` of the padded axis with constant active tiles."""
    positions = padded_positions(length, halo, offset, frame_len, padding)
    lower, upper, _ = tile_lower_frac(positions, n_tiles, frame_len)
    key = lower * n_tiles + upper
    return [(a, b, (v // n_tiles, v % n_tiles)) for a, b, v in constant_runs(key)]


def plan_tile_blocks(
    height: int,
    width: int,
    grid: tuple[int, int],
    halo: int,
    offset: tuple[int, int],
    frame_size: tuple[int, int],
    padding: str,
    wy: torch.Tensor,
    wx: torch.Tensor,
) -> list[TileBlock]:
    """Blocks of the padded input, each with the tiles whose weight is non-zero in it.

    Runs shorter than the PSF (tile spacing below k) are merged with their successors: a block then
    carries more than 2 x 2 tiles, but the halo no longer dominates every block's cost.
    """
    kernel = 2 * halo + 1
    runs_y = merge_short_runs(axis_runs(height, halo, offset[0], frame_size[0], grid[0], padding), kernel)
    runs_x = merge_short_runs(axis_runs(width, halo, offset[1], frame_size[1], grid[1], padding), kernel)
    blocks = []
    for y0, y1, ty in runs_y:
        live_y = [t for t in ty if bool(wy[t, y0:y1].any())]
        for x0, x1, tx in runs_x:
            live_x = [t for t in tx if bool(wx[t, x0:x1].any())]
            tiles = tuple((r, c) for r in live_y for c in live_x)
            if tiles:
                blocks.append(TileBlock((y0, y1), (x0, x1), tiles))
    return blocks


def merge_short_runs(runs: list, min_len: int) -> list[tuple[int, int, tuple[int, ...]]]:
    """Merge consecutive ``(start, stop, tiles)`` runs until each is ``min_len`` long (but the last)."""
    merged: list[tuple[int, int, tuple[int, ...]]] = []
    for start, stop, tiles in runs:
        if merged and merged[-1][1] - merged[-1][0] < min_len:
            prev_start, _, prev_tiles = merged.pop()
            merged.append((prev_start, stop, tuple(dict.fromkeys(prev_tiles + tuple(tiles)))))
        else:
            merged.append((start, stop, tuple(dict.fromkeys(tiles))))
    return merged


def choose_method(blocks: list[TileBlock], k: int) -> Literal["direct", "fft"]:
    """``"direct"`` or ``"fft"``, whichever the cost model (multiply-add units) says is cheaper for these
    blocks."""
    direct = fft = 0.0
    for b in blocks:
        ly, lx = b.rows[1] - b.rows[0], b.cols[1] - b.cols[0]
        n_tiles = len(b.tiles)
        direct += n_tiles * (ly + k - 1) * (lx + k - 1) * k * k
        area = fast_fft_len(ly + k - 1) * fast_fft_len(lx + k - 1)
        # n_tiles forward transforms and one inverse (real FFTs: half the complex work), then the products.
        fft += (n_tiles + 1) * 0.5 * area * math.log2(area) * _FFT_COST_PER_LOG_ELEMENT + n_tiles * area * 2
    return "direct" if direct <= fft else "fft"


def sv_conv2d_cpu(
    x: torch.Tensor,
    field_psfs: torch.Tensor,
    *,
    offset: tuple[int, int] = (0, 0),
    frame_size: tuple[int, int] | None = None,
    padding: str = "reflect",
    method: Method = "auto",
) -> torch.Tensor:
    """Spatially variant scatter convolution restricted to each tile's weight support.

    Same arguments and semantics as :func:`degtrans.kernels.sv_conv.reference.sv_conv2d_reference`, and
    ``method``: ``"direct"``, ``"fft"`` or ``"auto"`` (cost model). Differentiable in ``x`` and the PSFs.
    """
    rows, cols, channels, k, _ = field_psfs.shape
    halo = k // 2
    batch, _, height, width = x.shape
    frame = tuple(frame_size) if frame_size is not None else (height, width)
    wy, wx = padded_tile_weights(x, (rows, cols), halo, offset, frame, padding)
    blocks = plan_tile_blocks(height, width, (rows, cols), halo, offset, frame, padding, wy, wx)
    if method == "auto":
        method = choose_method(blocks, k)
    x_pad = pad_image(x, halo, padding)
    # Split (not slice) the input and the field, and overlap-add through a custom Function: their
    # backward passes then cost one pass over the image, not one full-size temporary per block.
    pieces = _split_into_blocks(x_pad, blocks)
    tiles = field_psfs.to(x.dtype).reshape(rows * cols, channels, k, k).unbind(0)
    convolve = _block_direct if method == "direct" else _block_fft
    spectra: dict = {}
    corners, parts = [], []
    for block in blocks:
        (y0, y1), (x0, x1) = block.rows, block.cols
        # Output rows reached by padded rows [y0, y1): [y0 - k + 1, y1 - 1], clipped to the image.
        oy0, oy1 = max(0, y0 - k + 1), min(height, y1)
        ox0, ox1 = max(0, x0 - k + 1), min(width, x1)  # never empty: y0 < height + k - 1, y1 > 0
        rw = torch.stack([wy[r, y0:y1] for r, _ in block.tiles])
        cw = torch.stack([wx[c, x0:x1] for _, c in block.tiles])
        weighted = pieces[block.rows + block.cols].unsqueeze(2) * rw[:, :, None] * cw[:, None, :]
        kernels = torch.stack([tiles[r * cols + c] for r, c in block.tiles], dim=1)  # (C, T, k, k)
        # Full convolution, (B, C, y1 - y0 + k - 1, x1 - x0 + k - 1), from output (y0 - k + 1, x0 - k + 1).
        full = convolve(weighted, kernels, block.tiles, spectra)
        sy, sx = oy0 - (y0 - k + 1), ox0 - (x0 - k + 1)
        corners.append((oy0, ox0))
        parts.append(full[..., sy : sy + oy1 - oy0, sx : sx + ox1 - ox0])
    return _OverlapAdd.apply((batch, channels, height, width), corners, *parts)


def _split_into_blocks(
    x_pad: torch.Tensor, blocks: list[TileBlock]
) -> dict[tuple[int, int, int, int], torch.Tensor]:
    """Views ``{(y0, y1, x0, x1): x_pad[..., y0:y1, x0:x1]}`` made by ``torch.split`` (blocks tile a grid)."""
    ys = sorted({0, x_pad.shape[-2], *(v for b in blocks for v in b.rows)})
    xs = sorted({0, x_pad.shape[-1], *(v for b in blocks for v in b.cols)})
    row_spans = list(zip(ys, ys[1:], strict=False))
    col_spans = list(zip(xs, xs[1:], strict=False))
    pieces = {}
    for (y0, y1), strip in zip(
        row_spans, torch.split(x_pad, [b - a for a, b in row_spans], dim=-2), strict=True
    ):
        split = torch.split(strip, [b - a for a, b in col_spans], dim=-1)
        for (x0, x1), piece in zip(col_spans, split, strict=True):
            pieces[(y0, y1, x0, x1)] = piece
    return pieces


class _OverlapAdd(torch.autograd.Function):
    """Sum of ``parts`` placed at ``corners`` of a zero tensor; the backward hands each part a view."""

    @staticmethod
    def forward(ctx, shape, corners, *parts):
        out = parts[0].new_zeros(shape)
        for (y, x), part in zip(corners, parts, strict=True):
            out[..., y : y + part.shape[-2], x : x + part.shape[-1]] += part
        ctx.boxes = [
            (y, x, part.shape[-2], part.shape[-1]) for (y, x), part in zip(corners, parts, strict=True)
        ]
        return out

    @staticmethod
    def backward(ctx, grad):
        return (None, None, *(grad[..., y : y + h, x : x + w] for y, x, h, w in ctx.boxes))


def _block_direct(weighted: torch.Tensor, kernels: torch.Tensor, tiles: tuple, spectra: dict) -> torch.Tensor:
    """Full convolution of ``weighted: (B, C, T, h, w)`` with ``kernels: (C, T, k, k)`` summed over T."""
    batch, channels, n_tiles, h, w = weighted.shape
    k = kernels.shape[-1]
    # Depthwise (one kernel per channel and tile) then a sum over tiles, on an explicitly zero-padded input:
    # on CPU, torch's grouped convolution with several input channels per group, and its built-in padding,
    # are each about 10x slower than this.
    full = F.conv2d(
        F.pad(weighted.reshape(batch, channels * n_tiles, h, w), (k - 1,) * 4),
        kernels.flip(-1, -2).reshape(channels * n_tiles, 1, k, k),
        groups=channels * n_tiles,
    )
    return full.view(batch, channels, n_tiles, *full.shape[-2:]).sum(dim=2)


def _block_fft(weighted: torch.Tensor, kernels: torch.Tensor, tiles: tuple, spectra: dict) -> torch.Tensor:
    """Same as :func:`_block_direct` through real FFTs (kernel spectra cached per tile and size)."""
    h, w = weighted.shape[-2:]
    k = kernels.shape[-1]
    size = (fast_fft_len(h + k - 1), fast_fft_len(w + k - 1))
    key = (size, tiles)
    if key not in spectra:
        spectra[key] = kernel_spectrum(kernels, size)
    product = (torch.fft.rfft2(weighted, s=size) * spectra[key]).sum(dim=2)
    return torch.fft.irfft2(product, s=size)[..., : h + k - 1, : w + k - 1]
