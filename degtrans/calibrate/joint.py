"""Stage II, joint: every tile's PSF at once, by preconditioned conjugate gradients over all pixels.

The photograph of pair ``p`` is ``y_p = sum_t h_t * (w_t x_p)`` (``sv_conv2d``'s product
convolution). Fitting one tile with its neighbours fixed (block relaxation) converges slowly because
neighbouring tiles share every pixel: on the triplet lens (3x4 tiles, k = 31, 256x320, 4 targets,
noise-free, true geometry) block-Jacobi rounds left a median pixel error of 0.086 after 2 rounds, 0.067
after 4 and 0.062 after 7 (the band's floor: 0.061); this solve, with non-negativity, reaches 0.078 in
one pass (0.089 without it), about the cost of one round (the tile sweeps, ``refine_rounds``, are
removed since). Here the normal equations of the whole field, ``(A^T M A + R) h = A^T M y``, are solved
together: ``M`` the pair masks, ``R`` the per-tile prior of ``priors.Regulariser``.

The products ``A^T M A h`` are sums over pixels, computed by shards (:mod:`degtrans.calibrate.shards`:
blocks of the frame with their halo) and added here; only the PSFs go to the shards and come back. A
runner supplies how the shards are reached (:data:`MapShards`): in this process (:func:`local_shards`),
on Ray actors (``degtrans.cluster.calibrate``), on a GPU. The preconditioner is each tile's normal
matrix seen as a convolution (the Bartlett-windowed autocorrelation of its masked source, summed over
the shards, plus the prior's spectrum), inverted per frequency, which makes the system nearly the
identity on the frequencies the targets cover.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from degtrans.calibrate.fit import FitProblem
from degtrans.calibrate.priors import Regulariser, normalise
from degtrans.calibrate.shards import Shard, ShardStats, plan_blocks, shard_data
from degtrans.kernels.spectral import fast_fft_len, otf_to_psf, psf_to_otf

# (method, args) -> one result per shard, in shard order: how a runner reaches its shards.
MapShards = Callable[[str, tuple], list]


@dataclass(frozen=True)
class JointResult:
    """``psfs``: (rows, cols, C, k, k) normalised; ``iterations``; ``residual``: (rows, cols) RMS weighted
    residual over each tile's region; ``relative_residual`` of the normal equations at the end;
    ``condition``: (rows, cols) of each tile's regularised normal matrix seen as a convolution (worst
    channel); ``observed_fraction``: (rows, cols) share of its frequencies where the data outweigh the
    prior (1: the targets decide every frequency)."""

    psfs: np.ndarray
    iterations: int
    residual: np.ndarray
    relative_residual: float
    condition: np.ndarray
    observed_fraction: np.ndarray


def problem_shards(problem: FitProblem, count: int) -> list:
    """The problem cut into ``count`` blocks with their halos (``shards.ShardData``, for any runner)."""
    return [shard_data(problem, block) for block in plan_blocks(problem.frame_size, count)]


def local_shards(problem: FitProblem, count: int = 1, device: str | torch.device = "cpu") -> MapShards:
    """Shards of ``problem`` held in this process (on ``device``), called one after the other."""
    shards = [Shard(data, device) for data in problem_shards(problem, count)]

    def run(method: str, args: tuple) -> list:
        return [getattr(shard, method)(*args) for shard in shards]

    return run


def gather_stats(results: list[ShardStats]) -> ShardStats:
    """The sum of the shards' partial statistics, on the CPU."""
    return ShardStats(
        *(_add([getattr(r, name) for r in results]) for name in ShardStats.__dataclass_fields__)
    )


def _add(results: list) -> torch.Tensor:
    return sum(torch.as_tensor(r).cpu() for r in results)


def preconditioner_symbol(stats: ShardStats, prior: Regulariser) -> torch.Tensor:
    """(T, C, n, n//2+1) per-tile symbol on an ``n x n`` grid (``n >= 2k``): the Bartlett-windowed
    autocorrelation's spectrum (lags up to ``k // 2``: the normal matrix as a convolution, smoothed)
    plus the scaled prior's."""
    k = stats.autocorrelation.shape[-1]
    r = k // 2
    n = fast_fft_len(2 * k)
    lags = torch.arange(k, dtype=torch.float32) - r
    bartlett = 1.0 - lags.abs() / (r + 1)
    windowed = stats.autocorrelation * (bartlett[:, None] * bartlett[None, :])
    # The autocorrelation is nearly symmetric (the mask breaks it slightly): use its symmetric part.
    windowed = 0.5 * (windowed + windowed.flip(-1, -2))
    spectrum = psf_to_otf(windowed, n, n).real
    scale = stats.scale[..., None, None]
    # Windowing keeps it nearly non-negative; a floor guards the rest.
    spectrum = spectrum.clamp(min=1e-3 * float(scale.mean()))
    return spectrum + scale * prior.power((n, n))[None, None]


def conditioning(stats: ShardStats, prior: Regulariser) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tile: the condition number of the regularised normal matrix seen as a convolution (worst
    channel) and the share of frequencies where the data power outweighs the prior's: (T,), (T,)."""
    symbol = preconditioner_symbol(stats, prior)
    scale = stats.scale.clamp(min=1e-12)[..., None, None]
    n = symbol.shape[-2]
    prior_power = prior.power((n, n))[None, None]
    data = symbol / scale - prior_power
    condition = (symbol.amax(dim=(-1, -2)) / symbol.amin(dim=(-1, -2))).amax(dim=1)
    observed = (data > prior_power).float().mean(dim=(1, 2, 3))
    return condition, observed


def solve_joint(
    run: MapShards,
    stats: ShardStats,
    start: np.ndarray,
    prior: Regulariser,
    support: torch.Tensor,
    iterations: int,
    tolerance: float = 1e-4,
    active_set_rounds: int = 3,
) -> JointResult:
    """Preconditioned CG on the whole field's normal equations from ``start`` (rows, cols, C, k, k),
    ``active_set_rounds`` times, each on the pixels that stayed positive.

    Args:
        run: reaches the shards (their ``normal`` and ``residual``).
        stats: the shards' summed statistics (:func:`gather_stats`); tiles no pair observes stay zero.
        support: (k, k) mask, 1 where a PSF must vanish.
    """
    rows, cols = start.shape[:2]
    k = start.shape[-1]
    tiles = rows * cols
    observed = (stats.coverage.sum(dim=1) > 0).float()[:, None, None, None]
    allowed = (1.0 - support)[None, None] * observed
    symbol = preconditioner_symbol(stats, prior)
    n = symbol.shape[-2]

    def apply(h: torch.Tensor) -> torch.Tensor:
        return _add(run("normal", (h,))) + prior.apply(h, stats.scale)

    def precondition(residual: torch.Tensor) -> torch.Tensor:
        return otf_to_psf(psf_to_otf(residual, n, n) * (1.0 / symbol), k, n, n)

    x = torch.from_numpy(np.asarray(start, np.float32)).reshape(tiles, *start.shape[2:]) * allowed
    steps = 0
    relative = float("nan")
    # Non-negativity by active sets: solve on the free pixels, drop those that came out negative, solve
    # again from there (a PSF's tails are where the band-limit ringing would go negative). Freeing a
    # dropped pixel again where the gradient asks for it (the primal-dual rule) changed nothing measured
    # (noise-free sharp-centre lens, 2x3 tiles: 0.063 vs 0.064 median pixel error).
    for _ in range(max(1, active_set_rounds)):
        x, taken, relative = _pcg(apply, precondition, stats.rhs, x, allowed, iterations, tolerance)
        steps += taken
        allowed = allowed * (x > 0)
        x = x.clamp(min=0.0)
    psfs = normalise(x * allowed)
    squared, weight = (_add(parts) for parts in zip(*run("residual", (psfs,)), strict=True))
    channels = psfs.shape[1]
    residual = (squared / (weight * channels).clamp(min=1e-12)).sqrt().reshape(rows, cols)
    condition, observed_fraction = conditioning(stats, prior)
    return JointResult(
        psfs=psfs.reshape(rows, cols, *psfs.shape[1:]).numpy().astype(np.float32),
        iterations=steps,
        residual=residual.numpy().astype(np.float64),
        relative_residual=relative,
        condition=condition.reshape(rows, cols).numpy().astype(np.float64),
        observed_fraction=observed_fraction.reshape(rows, cols).numpy().astype(np.float64),
    )


def _pcg(apply, precondition, b, x, free, iterations: int, tolerance: float):
    """Preconditioned CG restricted to the ``free`` pixels: ``(x, steps, relative residual)``."""
    b = b * free
    residual = b - apply(x * free) * free
    z = precondition(residual) * free
    direction = z.clone()
    rz = (residual * z).sum()
    b_norm = float(b.norm()) or 1.0
    steps = 0
    for _ in range(iterations):
        steps += 1
        q = apply(direction) * free
        alpha = rz / (direction * q).sum().clamp(min=1e-30)
        x = x + alpha * direction
        residual = residual - alpha * q
        if float(residual.norm()) / b_norm < tolerance:
            break
        z = precondition(residual) * free
        rz_next = (residual * z).sum()
        direction = z + (rz_next / rz.clamp(min=1e-30)) * direction
        rz = rz_next
    return x * free, steps, float(residual.norm()) / b_norm
