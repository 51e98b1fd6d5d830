"""Stage II's observations cut into blocks of pixels: the joint solve's products, shard by shard.

The photograph of pair ``p`` is ``y_p = sum_t h_t * (w_t x_p)`` (``sv_conv2d``'s product convolution),
and the joint solve needs the normal product ``A^T M A h`` of all tiles' PSFs ``h``. It is a sum over
the observed pixels, so any partition of the pixels splits it exactly: a :class:`Shard` owns a block
of the frame (:func:`plan_blocks`) and holds what its pixels need, for every pair: the photo and the
mask on the block, and for each tile whose PSF reaches the block, the tile's source ``w_t x`` on the
block plus the PSF's reach twice (its halo), as FFT spectra. Its products return partial sums over its
pixels, which add up to the whole field's (the driver, :mod:`degtrans.calibrate.joint`, adds them).
Only PSF-sized arrays leave a shard, so the blocks can live in separate processes (Ray actors,
``degtrans.cluster.calibrate``), on a GPU (tensors on ``device``), or all in this one.

Per (tile, pair) the source support ``S`` is the tile's region of influence (``w_t > 0``) within the
PSF's reach of the block's outputs ``O``; the buffer holds ``S`` with ``r = k // 2`` zeros on each side,
so circular FFT convolution on it equals the linear one on ``O`` (and the correlation back). With one
block covering the frame, each buffer is the tile's region of influence plus ``r``: the one-process
solve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from degtrans.calibrate.fit import FitProblem, tile_axes
from degtrans.errors import InputError
from degtrans.kernels.spectral import correlate, fast_fft_len, psf_to_otf

Tile = tuple[int, int]
Span = tuple[int, int]


@dataclass(frozen=True)
class Block:
    """Pixels ``rows[0] <= y < rows[1]``, ``cols[0] <= x < cols[1]`` of the frame."""

    rows: Span
    cols: Span


def plan_blocks(frame: tuple[int, int], count: int) -> list[Block]:
    """``count`` blocks of nearly equal area tiling the frame: a ``by x bx`` grid with ``by * bx = count``
    whose blocks are closest to square (the halo, twice the PSF's reach around each block, costs in
    proportion to its perimeter)."""
    if count < 1:
        raise ValueError(f"plan_blocks: count must be >= 1, got {count}")
    height, width = frame
    best = None
    for by in range(1, count + 1):
        if count % by:
            continue
        bx = count // by
        if by > height or bx > width:
            continue
        aspect = abs(np.log((height / by) / (width / bx)))
        if best is None or aspect < best[0]:
            best = (aspect, by, bx)
    if best is None:
        raise InputError(
            f"plan_blocks: a {height}x{width} frame cannot be cut into {count} blocks (calibrate.ray.actors)"
        )
    _, by, bx = best
    ys = [round(i * height / by) for i in range(by + 1)]
    xs = [round(j * width / bx) for j in range(bx + 1)]
    return [Block((ys[i], ys[i + 1]), (xs[j], xs[j + 1])) for i in range(by) for j in range(bx)]


def _support(weights: np.ndarray) -> Span:
    index = np.nonzero(weights > 1e-6)[0]
    return int(index[0]), int(index[-1]) + 1


def _intersect(a: Span, b: Span) -> Span | None:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if hi > lo else None


def _grow(span: Span, by: int) -> Span:
    return span[0] - by, span[1] + by


@dataclass(frozen=True)
class ShardData:
    """What one block needs from the registered pairs (numpy, for the object store).

    ``targets``: (P, C, h', w') the targets on the block grown by ``2 r`` (clipped to the frame), from
    frame pixel ``origin``; ``photos``: (P, C, bh, bw) and ``masks``: (P, bh, bw) on the block.
    """

    block: Block
    origin: tuple[int, int]
    targets: np.ndarray
    photos: np.ndarray
    masks: np.ndarray
    grid: tuple[int, int]
    frame: tuple[int, int]
    psf_size: int


def shard_data(problem: FitProblem, block: Block) -> ShardData:
    """Cut a block and its halo out of the problem's stacked pairs."""
    frame, psf_size = problem.frame_size, problem.psf_size
    reach = 2 * (psf_size // 2)
    y0, y1 = max(block.rows[0] - reach, 0), min(block.rows[1] + reach, frame[0])
    x0, x1 = max(block.cols[0] - reach, 0), min(block.cols[1] + reach, frame[1])
    (by0, by1), (bx0, bx1) = block.rows, block.cols
    return ShardData(
        block=block,
        origin=(y0, x0),
        targets=np.ascontiguousarray(problem.targets[:, :, y0:y1, x0:x1]),
        photos=np.ascontiguousarray(problem.photos[:, :, by0:by1, bx0:bx1]),
        masks=np.ascontiguousarray(problem.masks[:, by0:by1, bx0:bx1]),
        grid=problem.grid,
        frame=frame,
        psf_size=psf_size,
    )


@dataclass
class _Group:
    """Crops with one FFT shape: spectra (N, C, Hf, Wf//2+1), their tiles, and where their outputs go."""

    shape: tuple[int, int]
    spectra: torch.Tensor
    tiles: torch.Tensor
    # Per crop: pair, output rows/cols in block coordinates, and the outputs' offset inside the buffer.
    places: list[tuple[int, int, int, int, int, int, int]]
    # The group's distinct tiles, and each crop's index among them (PSFs are embedded once per tile).
    unique: torch.Tensor
    position: torch.Tensor


@dataclass(frozen=True)
class ShardStats:
    """Partial sums over a block's pixels, per tile of the whole grid (rows * cols, row-major).

    ``scale``: (T, C) ``sum M s^2``; ``autocorrelation``: (T, C, k, k) ``sum_q M s(q) s(q - d)`` for
    ``|d| <= k // 2`` (the tile's normal matrix seen as a convolution, for the preconditioner);
    ``coverage``: (T, P) ``sum M w_t`` (the pairs that observe each tile); ``observations``: (T,) the
    observed pixels in the tiles' regions of influence, over all pairs; ``rhs``: (T, C, k, k)
    ``A^T M y``.
    """

    scale: torch.Tensor
    autocorrelation: torch.Tensor
    coverage: torch.Tensor
    observations: torch.Tensor
    rhs: torch.Tensor


class Shard:
    """One block's observations as FFT spectra, and the products of the joint solve over its pixels.

    Every method takes and returns tensors over ALL tiles of the grid (``(T, C, k, k)``, row-major tile
    order); tiles that do not reach the block get zeros. Tensors live on ``device``.
    """

    def __init__(self, data: ShardData, device: str | torch.device = "cpu", chunk: int = 64) -> None:
        self.device = torch.device(device)
        self.grid = data.grid
        k = data.psf_size
        self.k, self.r = k, k // 2
        rows, cols = data.grid
        self.tiles = rows * cols
        pairs, channels = data.photos.shape[:2]
        self.pairs, self.channels = pairs, channels
        (by0, by1), (bx0, bx1) = data.block.rows, data.block.cols
        wy, wx = (w.astype(np.float32) for w in tile_axes(data.grid, data.frame))
        self.photos = torch.from_numpy(data.photos.astype(np.float32)).to(self.device)
        self.masks = torch.from_numpy(data.masks.astype(np.float32)).to(self.device)
        oy, ox = data.origin
        crops: dict[tuple[int, int], list] = {}
        for tile in range(self.tiles):
            tr, tc = divmod(tile, cols)
            ry, rx = _support(wy[tr]), _support(wx[tc])
            out_y = _intersect(data.block.rows, _intersect(_grow(ry, self.r), (0, data.frame[0])))
            out_x = _intersect(data.block.cols, _intersect(_grow(rx, self.r), (0, data.frame[1])))
            if out_y is None or out_x is None:
                continue
            src_y, src_x = _intersect(_grow(out_y, self.r), ry), _intersect(_grow(out_x, self.r), rx)
            if src_y is None or src_x is None:
                continue
            span_y, span_x = src_y[1] - src_y[0], src_x[1] - src_x[0]
            shape = (fast_fft_len(span_y + 2 * self.r), fast_fft_len(span_x + 2 * self.r))
            weight = wy[tr, src_y[0] : src_y[1], None] * wx[tc, None, src_x[0] : src_x[1]]
            for pair in range(pairs):
                observed = data.masks[pair, out_y[0] - by0 : out_y[1] - by0, out_x[0] - bx0 : out_x[1] - bx0]
                if not observed.any():
                    continue
                source = data.targets[pair, :, src_y[0] - oy : src_y[1] - oy, src_x[0] - ox : src_x[1] - ox]
                buffer = np.zeros((channels, *shape), np.float32)
                buffer[:, self.r : self.r + span_y, self.r : self.r + span_x] = source * weight
                # Buffer index 0 is frame pixel src - r; the outputs start there plus (out - src + r).
                place = (
                    pair,
                    out_y[0] - by0,
                    out_y[1] - by0,
                    out_x[0] - bx0,
                    out_x[1] - bx0,
                    out_y[0] - src_y[0] + self.r,
                    out_x[0] - src_x[0] + self.r,
                )
                crops.setdefault(shape, []).append((tile, place, buffer))
        self.groups: list[_Group] = []
        for shape, items in sorted(crops.items()):
            # Chunks of at most ``chunk`` crops bound the temporaries of a product (a 4000x6000 frame's
            # crops are a few MB each).
            for start in range(0, len(items), chunk):
                part = items[start : start + chunk]
                buffers = torch.from_numpy(np.stack([b for _, _, b in part])).to(self.device)
                tiles = torch.tensor([t for t, _, _ in part], device=self.device)
                unique, position = torch.unique(tiles, return_inverse=True)
                self.groups.append(
                    _Group(
                        shape=shape,
                        spectra=torch.fft.rfft2(buffers),
                        tiles=tiles,
                        places=[p for _, p, _ in part],
                        unique=unique,
                        position=position,
                    )
                )
        self._weights = (
            torch.from_numpy(wy[:, by0:by1]).to(self.device),
            torch.from_numpy(wx[:, bx0:bx1]).to(self.device),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(T, C, k, k) PSFs → (P, C, bh, bw) the predicted photographs on the block."""
        h = h.to(self.device, torch.float32)
        out = torch.zeros_like(self.photos)
        for group in self.groups:
            spectra = psf_to_otf(h[group.unique], *group.shape)[group.position] * group.spectra
            images = torch.fft.irfft2(spectra, s=group.shape)
            for index, (pair, y0, y1, x0, x1, oy, ox) in enumerate(group.places):
                out[pair, :, y0:y1, x0:x1] += images[index, :, oy : oy + y1 - y0, ox : ox + x1 - x0]
        return out

    def adjoint(self, frames: torch.Tensor) -> torch.Tensor:
        """(P, C, bh, bw) frames on the block → (T, C, k, k) ``A^T frames``."""
        out = torch.zeros(self.tiles, self.channels, self.k, self.k, device=self.device)
        for group in self.groups:
            crops = torch.zeros(len(group.places), self.channels, *group.shape, device=self.device)
            for index, (pair, y0, y1, x0, x1, oy, ox) in enumerate(group.places):
                crops[index, :, oy : oy + y1 - y0, ox : ox + x1 - x0] = frames[pair, :, y0:y1, x0:x1]
            back = correlate(torch.fft.rfft2(crops), group.spectra, self.k, group.shape)
            out.index_add_(0, group.tiles, back)
        return out

    def normal(self, h: torch.Tensor) -> torch.Tensor:
        """(T, C, k, k) → this block's part of ``A^T M A h``."""
        return self.adjoint(self.forward(h) * self.masks[:, None])

    def stats(self) -> ShardStats:
        """This block's partial sums (:class:`ShardStats`)."""
        k = self.k
        scale = torch.zeros(self.tiles, self.channels, device=self.device)
        autocorrelation = torch.zeros(self.tiles, self.channels, k, k, device=self.device)
        coverage = torch.zeros(self.tiles, self.pairs, device=self.device)
        wy, wx = self._weights
        cols = self.grid[1]
        for group in self.groups:
            sources = torch.fft.irfft2(group.spectra, s=group.shape)
            masked = torch.zeros_like(sources)
            for index, (pair, y0, y1, x0, x1, oy, ox) in enumerate(group.places):
                tile = int(group.tiles[index])
                # Only the block's own pixels count (each pixel in exactly one block: sums add up).
                m = self.masks[pair, y0:y1, x0:x1]
                masked[index, :, oy : oy + y1 - y0, ox : ox + x1 - x0] = (
                    m * sources[index, :, oy : oy + y1 - y0, ox : ox + x1 - x0]
                )
                tr, tc = divmod(tile, cols)
                coverage[tile, pair] += (m * (wy[tr, y0:y1, None] * wx[tc, None, x0:x1])).sum()
            scale.index_add_(0, group.tiles, (masked * sources).sum(dim=(-1, -2)))
            # Correlation of the masked source with the source at lags up to r: exact (the buffer's
            # r-wide zero margins keep the circular correlation from wrapping), so blocks add up.
            lags = correlate(torch.fft.rfft2(masked), group.spectra, k, group.shape)
            autocorrelation.index_add_(0, group.tiles, lags)
        inside_y, inside_x = (wy > 1e-6).float(), (wx > 1e-6).float()
        observations = torch.einsum("ry,pyx,cx->rc", inside_y, self.masks, inside_x).reshape(-1)
        rhs = self.adjoint(self.photos * self.masks[:, None])
        return ShardStats(scale, autocorrelation, coverage, observations, rhs)

    def residual(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per tile on this block: ``sum w_t M |A h - y|^2`` (channels summed), ``sum w_t M``: (T,) each."""
        error = ((self.forward(h) - self.photos) ** 2).sum(dim=1) * self.masks
        wy, wx = self._weights
        # sum_q wy[r, y] wx[c, x] e(y, x) for every tile at once.
        squared = torch.einsum("ry,pyx,cx->rc", wy, error, wx).reshape(-1)
        weight = torch.einsum("ry,pyx,cx->rc", wy, self.masks, wx).reshape(-1)
        return squared, weight
