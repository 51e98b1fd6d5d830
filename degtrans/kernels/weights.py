"""Bilinear weights of FOV tile centres, shared by every spatially variant operator.

Coordinates: pixel ``i`` covers ``[i, i + 1)`` on the sensor, so its centre is ``i + 0.5``;
tile ``r`` of ``n`` equal tiles over a frame of ``L`` pixels has its centre at ``(r + 0.5) * L / n``.
"""

from __future__ import annotations

import torch


def reflect_index(index: torch.Tensor, length: int) -> torch.Tensor:
    """Mirror integer indices into ``[0, length)`` like ``F.pad(mode="reflect")`` (edge not repeated)."""
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    folded = torch.remainder(index, period)
    return torch.where(folded < length, folded, period - folded)


def tile_lower_frac(
    positions: torch.Tensor, n_tiles: int, frame_len: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear interpolation coordinates of tile centres at integer sensor ``positions``.

    Args:
        positions: (N,) integer pixel positions on the sensor, in ``[0, frame_len)`` (or any shape that
            broadcasts with a tensor ``frame_len``, e.g. (P, N) with (P, 1) frame lengths).
        n_tiles: number of equal tiles along this axis.
        frame_len: sensor length along this axis in pixels (an int, or an integer tensor).

    Returns:
        ``lower`` (N,) int64, ``upper`` (N,) int64 and ``frac`` (N,) float64: the position's weight is
        ``1 - frac`` on tile ``lower`` and ``frac`` on tile ``upper`` (``upper == lower`` and ``frac == 0``
        when there is one tile); clamped (constant) outside the outer centres.
    """
    scale = n_tiles / frame_len.to(torch.float64) if torch.is_tensor(frame_len) else n_tiles / frame_len
    t = (positions.to(torch.float64) + 0.5) * scale - 0.5
    t = t.clamp(0.0, n_tiles - 1.0)
    lower = t.floor().clamp(max=max(n_tiles - 2, 0)).long()
    frac = t - lower.to(torch.float64)
    upper = (lower + 1).clamp(max=n_tiles - 1)
    return lower, upper, frac


def tile_weights_1d(
    positions: torch.Tensor, n_tiles: int, frame_len: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Bilinear weights of ``n_tiles`` tile centres at integer sensor ``positions``.

    Args:
        positions: (N,) integer pixel positions on the sensor, in ``[0, frame_len)``.
        n_tiles: number of equal tiles along this axis.
        frame_len: sensor length along this axis in pixels.

    Returns:
        (n_tiles, N) weights; every column sums to 1; clamped (constant) outside the outer centres.
    """
    lower, upper, frac = tile_lower_frac(positions, n_tiles, frame_len)
    weights = torch.zeros(n_tiles, positions.numel(), dtype=torch.float64, device=positions.device)
    cols = torch.arange(positions.numel(), device=positions.device)
    weights[lower, cols] = 1.0 - frac
    weights[upper, cols] += frac
    return weights.to(dtype)


def constant_runs(values: torch.Tensor) -> list[tuple[int, int, int]]:
    """Maximal runs of equal consecutive entries of a 1-D integer tensor as ``(start, stop, value)``."""
    v = values.tolist()
    runs = []
    start = 0
    for i in range(1, len(v) + 1):
        if i == len(v) or v[i] != v[start]:
            runs.append((start, i, v[start]))
            start = i
    return runs


def padded_positions(
    length: int, halo: int, offset: int, frame_len: int, padding: str, device: torch.device | None = None
) -> torch.Tensor:
    """Sensor positions of the ``length + 2*halo`` samples of a padded patch axis.

    With ``reflect`` a padded sample takes the position of its mirror inside the patch; with
    ``zeros`` its weight does not matter (the sample is zero), so it is clamped to the patch.
    """
    offsets, frames = torch.tensor([offset], device=device), torch.tensor([frame_len], device=device)
    return padded_positions_batch(length, halo, offsets, frames, padding)[0]


def padded_positions_batch(
    length: int, halo: int, offsets: torch.Tensor, frame_lens: torch.Tensor, padding: str
) -> torch.Tensor:
    """:func:`padded_positions` of P patches: ``offsets``, ``frame_lens`` (P,) -> (P, length + 2*halo)."""
    local = torch.arange(-halo, length + halo, device=offsets.device)
    local = reflect_index(local, length) if padding == "reflect" else local.clamp(0, length - 1)
    return torch.minimum((local[None, :] + offsets[:, None]).clamp(min=0), frame_lens[:, None] - 1)
