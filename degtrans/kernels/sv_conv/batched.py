"""Batched product convolution by FFT: every block of every image in one rFFT, one product, one overlap-add.

The bilinear tile weights are separable and piecewise linear, so along each axis the padded image
splits into blocks in which a few tiles (*slots*, usually 2) have non-zero weight. Block ``(i, j)`` of
image ``b`` contributes the full linear convolution ``sum_{a, s} h_{f_b, a, s} * (wy_a wx_s x_b)`` of its
window. All windows are padded to one FFT size, so one batched ``rfft2`` transforms every weighted
window of the batch, one product with the tile spectra (summed over the slots) and one ``irfft2`` give
every block's full convolution, and one overlap-add (two ``index_add``) places them in the output.

Per axis, the partition into blocks is either the runs of constant active tiles (when the batch shares
one geometry; 2 slots per block) or ``nb`` equal chunks (any geometry: images at different sensor
positions, frames and fields each get their own tiles and weights per block); a cost model picks the
pair of partitions. Plain torch ops, so autograd gives the gradients in ``x`` and in the PSFs (batched
correlations of the same shapes) and the path runs on any device; it computes in float32 (float64 for
float64 inputs) whatever the input dtype or autocast state.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from degtrans.kernels._utils import pad_image
from degtrans.kernels.spectral import fast_fft_len, kernel_spectrum
from degtrans.kernels.sv_conv.cpu import merge_short_runs
from degtrans.kernels.sv_conv.placement import PatchPlacement
from degtrans.kernels.weights import constant_runs, padded_positions_batch, tile_lower_frac

# Cost model units: an element of a real FFT is 0.5 per log2 level (a memory-bound transform passes over
# its data a few times). Counted by memory traffic against that: a complex product element of the slots
# (gathering its tile spectrum, the product, the sum over slots) about 20 units, a weighted window element
# (the weights' product, the zero padding before the transform) about 8.
_POINTWISE = 20.0
_WEIGHTING = 8.0
# "auto" on CUDA compares seconds: fitted on the H200 of the first GPU run (docs/kernels.md), where the
# single-kernel FFT floor took 3.2 ms at 3000x4000 and 5.2 ms at 4000x6000 (1.1-1.4e-12 s per unit of
# this model, counting its three transforms, product and padding) and the Triton kernel 84 and 171 ms at
# k = 31 (2.4-2.5e-12 s per output pixel and tap).
# The fixed costs are launch counts (about 25 launches here, 4 for Triton) times ~10 us.
# benchmarks/sv_conv_gpu.py times both backends and reports whether "auto" picked the faster.
CUDA_SECONDS_PER_UNIT = 1.25e-12
CUDA_FIXED_S = 2.5e-4
TRITON_SECONDS_PER_TAP = 2.5e-12
TRITON_FIXED_S = 4e-5
# Block counts tried per axis (besides the runs of constant active tiles).
_CHUNKS = (1, 2, 3, 4, 6, 8, 12, 16)


@dataclass(frozen=True)
class AxisPlan:
    """The blocks of one padded axis.

    Attributes:
        starts: (nb,) first padded index of each block (shared by the batch).
        length: L, every block's window length (blocks shorter than L get zero weight past their end).
        tiles: (P, nb, S) tile of each slot along this axis.
        weights: (P, nb, S, L) float64 weight of each slot at each window sample (0 for unused slots).
        fft_len: transform length, >= L + k - 1 (the full convolution of a window).
    """

    starts: torch.Tensor
    length: int
    tiles: torch.Tensor
    weights: torch.Tensor
    fft_len: int

    @property
    def blocks(self) -> int:
        return int(self.starts.shape[0])

    @property
    def slots(self) -> int:
        return int(self.tiles.shape[-1])


@dataclass(frozen=True)
class AxisTiles:
    """Bilinear coordinates of the padded axis of P images: ``lower``, ``upper`` (P, Lp) int64 and
    ``frac`` (P, Lp) float64 (see :func:`degtrans.kernels.weights.tile_lower_frac`), and the first and
    last tile with non-zero weight at each sample, ``first``, ``last`` (P, Lp)."""

    lower: torch.Tensor
    upper: torch.Tensor
    frac: torch.Tensor
    first: torch.Tensor
    last: torch.Tensor

    @classmethod
    def of(
        cls, length: int, halo: int, offsets: torch.Tensor, frames: torch.Tensor, n_tiles: int, padding: str
    ) -> AxisTiles:
        positions = padded_positions_batch(length, halo, offsets, frames, padding)
        lower, upper, frac = tile_lower_frac(positions, n_tiles, frames[:, None])
        first = torch.where(frac < 1, lower, upper)
        last = torch.where(frac > 0, upper, lower)
        return cls(lower, upper, frac, first, last)

    @property
    def padded(self) -> int:
        return int(self.lower.shape[1])


def _slot_count(axis: AxisTiles, starts: list[int]) -> int:
    """S: the most tiles with non-zero weight in one block, over blocks and images."""
    marks = torch.zeros(axis.padded, dtype=torch.long)
    marks[torch.tensor(starts[1:], dtype=torch.long)] = 1
    block = marks.cumsum(0).expand_as(axis.first)  # the block each padded sample belongs to
    shape = (axis.first.shape[0], len(starts))
    low = axis.first.new_full(shape, 2**62).scatter_reduce(1, block, axis.first, "amin")
    high = axis.last.new_full(shape, -1).scatter_reduce(1, block, axis.last, "amax")
    return int((high - low).max()) + 1


def axis_plan(axis: AxisTiles, starts: list[int], length: int, k: int) -> AxisPlan:
    """The slots and weights of the blocks that begin at ``starts`` (each ends where the next begins)."""
    padded = axis.padded
    stops = torch.tensor([*starts[1:], padded])
    index = torch.tensor(starts)[:, None] + torch.arange(length)  # (nb, L)
    inside = index < stops[:, None]
    index = index.clamp(max=padded - 1)
    lower, upper, frac = axis.lower[:, index], axis.upper[:, index], axis.frac[:, index]  # (P, nb, L)
    big = 2**62
    low = torch.where(inside, axis.first[:, index], big).amin(-1)  # (P, nb)
    high = torch.where(inside, axis.last[:, index], -1).amax(-1)
    slots = int((high - low).max()) + 1
    tile = low[..., None] + torch.arange(slots)  # (P, nb, S)
    used = tile <= high[..., None]
    tile = torch.where(used, tile, low[..., None])
    t = tile[..., None]
    zero = frac.new_zeros(())
    weights = torch.where(lower[:, :, None] == t, (1.0 - frac)[:, :, None], zero)
    weights = weights + torch.where(upper[:, :, None] == t, frac[:, :, None], zero)
    weights = torch.where(inside[None, :, None] & used[..., None], weights, zero)
    return AxisPlan(torch.tensor(starts), length, tile, weights, fast_fft_len(length + k - 1))


def axis_partitions(axis: AxisTiles, k: int, shared: bool) -> list[tuple[list[int], int, int]]:
    """Partitions of one axis to choose from, as ``(starts, length, slots)``: equal chunks, and the runs of
    constant active tiles when the batch shares one geometry (``shared``)."""
    padded = axis.padded
    options = []
    for chunks in _CHUNKS:
        length = math.ceil(padded / chunks)
        if chunks > 1 and length < k:
            break
        starts = list(range(0, padded, length))
        options.append((starts, length, _slot_count(axis, starts)))
    if shared:
        key = axis.first[0] * (2**31) + axis.last[0]
        runs = [(a, b) for a, b, _ in merge_short_runs([(a, b, (v,)) for a, b, v in constant_runs(key)], k)]
        options.append(_partition(axis, runs))
        # The edge runs are about half a tile: cut the others to about their length too, so that every
        # window is padded to a length close to its own (fewer samples to transform, same slots).
        shortest = min(b - a for a, b in runs)
        if shortest >= k:
            pieces = [
                (a + (b - a) * i // n, a + (b - a) * (i + 1) // n)
                for a, b in runs
                for n in [max(1, round((b - a) / shortest))]
                for i in range(n)
            ]
            options.append(_partition(axis, pieces))
    return options


def _partition(axis: AxisTiles, blocks: list[tuple[int, int]]) -> tuple[list[int], int, int]:
    starts = [a for a, _ in blocks]
    return starts, max(b - a for a, b in blocks), _slot_count(axis, starts)


def _fft_units(n: int) -> float:
    return 0.5 * n * math.log2(max(n, 2))


def plan_cost(y: tuple[int, int, int], x: tuple[int, int, int], images: int, spectra: int, k: int) -> float:
    """Cost-model units of one call with ``(blocks, length, slots)`` per axis: the windows' transforms,
    products and inverse transforms of ``images`` (batch x channels) images, and ``spectra`` PSF spectra."""
    (by, ly, sy), (bx, lx, sx) = y, x
    ny, nx = fast_fft_len(ly + k - 1), fast_fft_len(lx + k - 1)
    half = ny * (nx // 2 + 1)
    per_block = (sy * sx + 1) * _fft_units(ny * nx) + sy * sx * (half * _POINTWISE + ly * lx * _WEIGHTING)
    return images * by * bx * per_block + spectra * _fft_units(ny * nx)


@dataclass(frozen=True)
class Plan:
    """The blocks of both axes, chosen by :func:`make_plan`, and the cost model's estimate."""

    y: AxisPlan
    x: AxisPlan
    cost: float


def make_plan(
    shape: tuple[int, int, int, int], grid: tuple[int, int], k: int, geometry: PatchPlacement, padding: str
) -> Plan:
    """The cheapest pair of axis partitions for images of ``shape`` (B, C, H, W) on fields of ``grid``."""
    if geometry.count == 1:
        return _shared_plan(
            shape, grid, k, tuple(geometry.offsets[0].tolist()), tuple(geometry.frames[0].tolist()), padding
        )
    return _make_plan(shape, grid, k, geometry, padding)


@functools.lru_cache(maxsize=64)
def _shared_plan(shape, grid, k, offset, frame, padding) -> Plan:
    """Plans of a batch that shares one geometry are cached: calibration and synthesis repeat them."""
    geometry = PatchPlacement(torch.tensor([offset]), torch.tensor([frame]), torch.zeros(1, dtype=torch.long))
    return _make_plan(shape, grid, k, geometry, padding)


def _make_plan(shape, grid, k, geometry: PatchPlacement, padding: str) -> Plan:
    batch, channels, height, width = shape
    halo = k // 2
    shared = geometry.count == 1
    ay = AxisTiles.of(height, halo, geometry.offsets[:, 0], geometry.frames[:, 0], grid[0], padding)
    ax = AxisTiles.of(width, halo, geometry.offsets[:, 1], geometry.frames[:, 1], grid[1], padding)
    spectra = grid[0] * grid[1] * (1 if shared else int(geometry.fields.unique().numel()))
    options_x = axis_partitions(ax, k, shared)
    best = None
    for starts_y, ly, sy in axis_partitions(ay, k, shared):
        for starts_x, lx, sx in options_x:
            y, x = (len(starts_y), ly, sy), (len(starts_x), lx, sx)
            cost = plan_cost(y, x, batch * channels, spectra * channels, k)
            if best is None or cost < best[0]:
                best = (cost, (starts_y, ly), (starts_x, lx))
    cost, (starts_y, ly), (starts_x, lx) = best
    return Plan(axis_plan(ay, starts_y, ly, k), axis_plan(ax, starts_x, lx, k), cost)


def cuda_choice(
    shape: tuple[int, int, int, int], grid: tuple[int, int], k: int, geometry: PatchPlacement, padding: str
) -> str:
    """``"fft"`` or ``"triton"``, whichever the cost model says is faster for this call on a GPU."""
    batch, channels, height, width = shape
    triton = batch * channels * height * width * k * k * TRITON_SECONDS_PER_TAP + TRITON_FIXED_S
    if triton <= CUDA_FIXED_S:  # a small call: the direct kernel wins before any plan is made
        return "triton"
    fft = make_plan(shape, grid, k, geometry, padding).cost * CUDA_SECONDS_PER_UNIT + CUDA_FIXED_S
    return "fft" if fft <= triton else "triton"


def _overlap_index(starts: torch.Tensor, full: int, k: int, size: int) -> torch.Tensor:
    """(nb * full,) output index of every sample of every block's full convolution; ``size`` (a dump
    slot, dropped afterwards) where it falls outside the image."""
    index = starts[:, None] + torch.arange(full) - (k - 1)
    return torch.where((index >= 0) & (index < size), index, size).reshape(-1)


def sv_conv2d_batched(
    x: torch.Tensor, field_psfs: torch.Tensor, geometry: PatchPlacement, padding: str = "reflect"
) -> torch.Tensor:
    """Spatially variant scatter convolution of a batch in one transform (the ``"fft"`` backend).

    Same semantics as :func:`degtrans.kernels.sv_conv.reference.sv_conv2d_reference` applied to each
    image with its own offset, frame size and field.

    Args:
        x: (B, C, H, W) images.
        field_psfs: (F, rows, cols, C, k, k) PSF fields, k odd.
        geometry: the images' offsets, frame sizes and field indices (shared, or one per image).
        padding: ``"reflect"`` or ``"zeros"``.

    Returns:
        (B, C, H, W) in ``x``'s dtype, differentiable in ``x`` and ``field_psfs``.
    """
    n_fields, rows, cols, channels, k, _ = field_psfs.shape
    batch, _, height, width = x.shape
    device = x.device
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    plan = make_plan(tuple(x.shape), (rows, cols), k, geometry, padding)
    py, px = plan.y, plan.x
    count = geometry.count
    ny, nx = py.fft_len, px.fft_len
    # Autocast would run the products in half precision; the transforms need float32 anyway.
    with torch.autocast(device.type, enabled=False):
        x_pad = pad_image(x.to(work), k // 2, padding)
        row_index = (py.starts[:, None] + torch.arange(py.length)).clamp(max=x_pad.shape[-2] - 1)
        col_index = (px.starts[:, None] + torch.arange(px.length)).clamp(max=x_pad.shape[-1] - 1)
        windows = x_pad.index_select(-2, row_index.reshape(-1).to(device))
        windows = windows.index_select(-1, col_index.reshape(-1).to(device))
        windows = windows.view(batch, channels, py.blocks, py.length, px.blocks, px.length)
        windows = windows.permute(0, 1, 2, 4, 3, 5)[:, :, :, :, None, None]  # (B, C, nby, nbx, 1, 1, Ly, Lx)
        # (P, 1, nby, nbx, Sy, Sx, Ly, Lx): the product of the separable slot weights.
        wy = py.weights.to(device, work).view(count, 1, py.blocks, 1, py.slots, 1, py.length, 1)
        wx = px.weights.to(device, work).view(count, 1, 1, px.blocks, 1, px.slots, 1, px.length)
        spectra = torch.fft.rfft2(windows * (wy * wx), s=(ny, nx))  # (B, C, nby, nbx, Sy, Sx, Ny, Nxh)

        # Tile spectra of the fields in use, gathered per (image, block, slot).
        used, field_of = geometry.fields.unique(return_inverse=True)
        tiles = field_psfs.index_select(0, used.to(device)).to(work).reshape(-1, channels, k, k)
        tile_spectra = kernel_spectrum(tiles, (ny, nx)).transpose(0, 1)  # (C, U * T, Ny, Nxh)
        index = (
            field_of.view(count, 1, 1, 1, 1) * (rows * cols)
            + py.tiles.view(count, py.blocks, 1, py.slots, 1) * cols
            + px.tiles.view(count, 1, px.blocks, 1, px.slots)
        )
        shape = (channels, count, py.blocks, px.blocks, py.slots, px.slots, ny, nx // 2 + 1)
        # Gathered as real pairs: the backward then adds real gradients (index_add), never complex ones.
        gathered = torch.view_as_real(tile_spectra).index_select(1, index.reshape(-1).to(device))
        kernels = torch.view_as_complex(gathered).view(shape).transpose(0, 1)
        product = (spectra * kernels).sum(dim=(4, 5))  # (B, C, nby, nbx, Ny, Nxh)
        full_y, full_x = py.length + k - 1, px.length + k - 1
        full = torch.fft.irfft2(product, s=(ny, nx))[..., :full_y, :full_x]

        # Overlap-add: along x into (B, C, nby, full_y, W + 1), then along y into (B, C, H + 1, W + 1).
        out_x = _overlap_index(px.starts, full_x, k, width).to(device)
        out_y = _overlap_index(py.starts, full_y, k, height).to(device)
        full = full.permute(0, 1, 2, 4, 3, 5).reshape(batch, channels, py.blocks * full_y, px.blocks * full_x)
        rows_out = full.new_zeros(batch, channels, py.blocks * full_y, width + 1).index_add(-1, out_x, full)
        out = rows_out.new_zeros(batch, channels, height + 1, width + 1).index_add(-2, out_y, rows_out)
    return out[..., :height, :width].to(x.dtype)
