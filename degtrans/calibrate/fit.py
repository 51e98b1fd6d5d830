"""Per-tile degradation transfer (stage II): fit tile ``(r, c)``'s PSF from every pair that covers it.

The photograph of a tile is made by the *interpolated* field (``sv_conv2d``: ``y = sum_t h_t * (w_t x)``
with the bilinear tile weights ``w_t``), so one PSF per tile fitted to the tile region alone is biased
toward its neighbours (first order at the frame border, where the weights are clamped). We therefore:

1. **init** (``field=None``): weighted least squares of a single PSF over the tile's region, rows
   weighted by ``w_rc`` (centre-weighted), solved in closed form (normal equations, Tikhonov);
2. **exact** (``field`` given): the model of the tile's region is exact — ``h_rc * (w_rc x)`` plus the
   fixed contribution of the neighbours taken from ``field`` (``sv_conv2d`` on the crop with tile
   ``(r, c)`` zeroed) — solved again in closed form; rounds of this (block Jacobi over tiles) converge to
   the joint least-squares field;
3. **descent**: a short Adam run on ``alpha·L1 + beta·sum2one + gamma·boundary + delta·sym`` from the
   closed form, through the direct (``h = theta^2``, non-negative by construction) or the deep-linear
   parameterisation.

The spatial normal equations replace the Fourier-domain regularised least squares of the issue: the
same estimator, but exact on a masked, non-periodic crop (no window or wrap-around bias), and for
``k <= 31`` the ``k^2 x k^2`` system is cheap. Observations are sampled pixels (at most
``max_pixels`` per tile, seeded by ``(seed, row, col)``), so the cost per tile does not grow with
the frame. Every function is idempotent: the same inputs give the same PSF.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from degtrans.calibrate import losses
from degtrans.calibrate.shards import fast_size
from degtrans.config import CalibrateConfig
from degtrans.kernels import sv_conv2d
from degtrans.kernels.weights import tile_weights_1d


class TileFitError(RuntimeError):
    """A tile that cannot be fitted (no pair covers it)."""


@dataclass(frozen=True, eq=False)
class FitProblem:
    """Registered pairs in linear camera RGB on the photo grid (what every tile actor loads once).

    Attributes:
        targets: (P, C, H, W) float32 targets mapped to camera RGB (stage I applied).
        photos: (P, C, H, W) float32 linearised photographs.
        masks: (P, H, W) bool, pixels whose whole ``k x k`` footprint lies on the target.
        names: pair names.
        grid: (rows, cols) FOV tiles.
        psf_size: k, odd.
    """

    targets: np.ndarray
    photos: np.ndarray
    masks: np.ndarray
    names: tuple[str, ...]
    grid: tuple[int, int]
    psf_size: int

    def __post_init__(self) -> None:
        if self.targets.ndim != 4 or self.targets.shape != self.photos.shape:
            raise ValueError(
                "FitProblem: targets and photos must both be (P, C, H, W),"
                f" got {self.targets.shape} and {self.photos.shape}"
            )
        if self.masks.shape != (self.targets.shape[0], *self.targets.shape[2:]):
            raise ValueError(f"FitProblem: masks must be (P, H, W), got {self.masks.shape}")
        if self.psf_size < 1 or self.psf_size % 2 == 0:
            raise ValueError(f"FitProblem: psf_size must be odd, got {self.psf_size}")

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.targets.shape[2]), int(self.targets.shape[3])

    @property
    def channels(self) -> int:
        return int(self.targets.shape[1])


@dataclass(frozen=True)
class TileFit:
    """One tile's result.

    Attributes:
        psf: (C, k, k) float32, non-negative, each channel summing to 1.
        loss: final total loss of the descent (closed-form fits: the fidelity term).
        residual: re-blur error over the tile's observations (linear RGB): RMS for the Fourier and joint
            solves, mean |error| for the patch solver and the descent.
        pairs: number of pairs that cover the tile.
        pixels: observations used.
        seconds: wall time of this fit.
        condition: the regularised normal matrix's condition number, estimated from the spectra
            (Fourier solver; NaN otherwise).
        observed_fraction: share of the kernel's frequencies where the targets, not the prior, decide.
    """

    row: int
    col: int
    psf: np.ndarray
    loss: float
    residual: float
    pairs: int
    pixels: int
    seconds: float
    condition: float = float("nan")
    observed_fraction: float = float("nan")


def tile_weight_map(grid: tuple[int, int], frame_size: tuple[int, int], row: int, col: int) -> np.ndarray:
    """(H, W) float32 bilinear weight of tile ``(row, col)`` at every pixel, as ``sv_conv2d`` uses it."""
    wy = tile_weights_1d(torch.arange(frame_size[0]), grid[0], frame_size[0], torch.float64)[row]
    wx = tile_weights_1d(torch.arange(frame_size[1]), grid[1], frame_size[1], torch.float64)[col]
    return (wy[:, None] * wx[None, :]).numpy().astype(np.float32)


def _offsets(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = k // 2
    dy, dx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    return dy.reshape(-1), dx.reshape(-1)


def sample_pixels(
    problem: FitProblem, row: int, col: int, max_pixels: int, seed: int
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Observation pixels of tile ``(row, col)``: ``[(pair, ys, xs)]`` inside the tile's region of
    influence (``w_rc > 0``) and the pair's mask, at most ``max_pixels`` in all (seeded subsample)."""
    weight = tile_weight_map(problem.grid, problem.frame_size, row, col)
    region = weight > 1e-6
    candidates = []
    for pair in range(problem.targets.shape[0]):
        ys, xs = np.nonzero(region & problem.masks[pair])
        if ys.size:
            candidates.append((pair, ys, xs))
    total = sum(ys.size for _, ys, _ in candidates)
    if total > max_pixels:
        rng = np.random.default_rng([seed, row, col])
        keep_fraction = max_pixels / total
        thinned = []
        for pair, ys, xs in candidates:
            keep = rng.random(ys.size) < keep_fraction
            thinned.append((pair, ys[keep], xs[keep]))
        candidates = [item for item in thinned if item[1].size]
    return candidates


@dataclass(frozen=True)
class TileSystem:
    """The linear observation model of one tile: ``photo = A @ vec(flip(h)) + fixed`` per channel.

    ``a``: (C, N, k*k) patches; ``observed``, ``fixed``: (C, N); ``weights``: (N,) row weights.
    """

    a: torch.Tensor
    observed: torch.Tensor
    fixed: torch.Tensor
    weights: torch.Tensor
    pairs: int

    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """(C, N) prediction for PSFs ``h: (C, k, k)``."""
        coeff = h.flip(-1, -2).reshape(h.shape[0], -1, 1)
        return torch.bmm(self.a, coeff).squeeze(-1) + self.fixed


def build_system(
    problem: FitProblem, row: int, col: int, field: np.ndarray | None, max_pixels: int, seed: int
) -> TileSystem:
    """Gather the tile's observations.

    With ``field=None`` the single-PSF model (patches of ``x``, rows weighted by ``w_rc``); with a field
    ``(rows, cols, C, k, k)`` the exact model (patches of ``w_rc x``, neighbours' contribution fixed).
    """
    samples = sample_pixels(problem, row, col, max_pixels, seed)
    if not samples:
        raise TileFitError(f"tile ({row}, {col}): no registered pair covers it")
    k = problem.psf_size
    r = k // 2
    dy, dx = _offsets(k)
    weight_map = torch.from_numpy(tile_weight_map(problem.grid, problem.frame_size, row, col))
    field_zeroed = None
    if field is not None:
        field_zeroed = torch.from_numpy(np.array(field, dtype=np.float32))
        field_zeroed[row, col] = 0.0
    patches, observed, fixed, weights = [], [], [], []
    for pair, ys_np, xs_np in samples:
        ys, xs = torch.from_numpy(ys_np), torch.from_numpy(xs_np)
        x = torch.from_numpy(problem.targets[pair])
        source = x * weight_map if field is not None else x
        patches.append(source[:, ys[:, None] + dy[None, :], xs[:, None] + dx[None, :]])
        observed.append(torch.from_numpy(problem.photos[pair])[:, ys, xs])
        if field_zeroed is None:
            fixed.append(torch.zeros(problem.channels, ys.numel()))
            weights.append(weight_map[ys, xs])
        else:
            y0, y1 = int(ys.min()) - r, int(ys.max()) + r + 1
            x0, x1 = int(xs.min()) - r, int(xs.max()) + r + 1
            with torch.no_grad():
                rest = sv_conv2d(
                    x[None, :, y0:y1, x0:x1],
                    field_zeroed,
                    offset=(y0, x0),
                    frame_size=problem.frame_size,
                    padding="zeros",
                )[0]
            fixed.append(rest[:, ys - y0, xs - x0])
            weights.append(torch.ones(ys.numel()))
    return TileSystem(
        a=torch.cat(patches, dim=1).contiguous(),
        observed=torch.cat(observed, dim=1),
        fixed=torch.cat(fixed, dim=1),
        weights=torch.cat(weights),
        pairs=len(samples),
    )


def solve_least_squares(
    system: TileSystem, k: int, support: torch.Tensor, regulariser: float, iterations: int = 150
) -> torch.Tensor:
    """Closed-form start: Tikhonov least squares over the allowed support with ``h >= 0``.

    The unconstrained solution of the normal equations starts FISTA (projected accelerated gradient
    on the same quadratic), which enforces non-negativity: for narrow PSFs that prior halves the error
    of the plain solve on noisy photographs. Returns clipped, normalised ``(C, k, k)``.
    """
    inside = (support.flip(-1, -2).reshape(-1) == 0).nonzero().squeeze(1)
    # The products run in float32 (the cost: N x k^4 per channel); the small solve in float64.
    a = system.a[:, :, inside]
    weighted = system.weights[None, :, None] * a
    gram = (a.transpose(1, 2) @ weighted).double()
    rhs = (weighted.transpose(1, 2) @ (system.observed - system.fixed)[..., None]).double()
    scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1)
    eye = torch.eye(inside.numel(), dtype=torch.float64, device=gram.device)
    gram = gram + regulariser * scale[:, None, None] * eye
    lipschitz = torch.linalg.eigvalsh(gram)[:, -1][:, None, None]
    x = torch.linalg.solve(gram, rhs).clamp(min=0.0)
    y, t = x.clone(), 1.0
    for step in range(iterations):
        x_next = (y - (gram @ y - rhs) / lipschitz).clamp(min=0.0)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        y = x_next + (t - 1.0) / t_next * (x_next - x)
        change = float((x_next - x).abs().max()) if step % 10 == 9 else 1.0
        x, t = x_next, t_next
        if change < 1e-7 * float(x.abs().max()):
            break
    full = torch.zeros(system.a.shape[0], k * k, dtype=torch.float64, device=system.a.device)
    full[:, inside] = x.squeeze(-1)
    return _normalise(full.reshape(-1, k, k).flip(-1, -2).float())


@dataclass(frozen=True)
class FourierSystem:
    """Every observation of one tile, as FFTs over a crop of its region of influence (``solver="fourier"``).

    The model of a pair's crop is ``photo = W * ((s * h) + fixed)`` with ``s`` the source (``x`` for the
    single-PSF init, ``w_rc x`` for the exact model), ``W`` the row weights (the init's ``w_rc``, or 1)
    times the mask. Products with the normal matrix cost a few FFTs, whatever ``k`` and the number of
    pixels, so all pixels of the region are used and ``k = 41`` costs what ``k = 11`` does.

    ``sources``: (P, C, Hf, Wf//2+1) complex; ``weights``: (P, 1, Hf, Wf); ``rhs``: (C, k, k) ``A^T W b``;
    ``scale``: (C,) mean diagonal of ``A^T W A``; ``power``: (C, Hf, Wf//2+1) weighted source power.
    """

    sources: torch.Tensor
    weights: torch.Tensor
    rhs: torch.Tensor
    scale: torch.Tensor
    power: torch.Tensor
    shape: tuple[int, int]
    k: int
    pairs: int
    pixels: int
    data_norm: torch.Tensor

    def _embed(self, h: torch.Tensor) -> torch.Tensor:
        """(C, k, k) kernel → (C, Hf, Wf//2+1) spectrum, offset ``o`` stored at ``o mod (Hf, Wf)``."""
        r = self.k // 2
        padded = h.new_zeros(h.shape[0], *self.shape)
        padded[:, : self.k, : self.k] = h
        return torch.fft.rfft2(torch.roll(padded, shifts=(-r, -r), dims=(-2, -1)))

    def _extract(self, image: torch.Tensor) -> torch.Tensor:
        """(C, Hf, Wf) correlation → (C, k, k) at offsets ``-r..r``."""
        r = self.k // 2
        return torch.roll(image, shifts=(r, r), dims=(-2, -1))[:, : self.k, : self.k]

    def normal(self, h: torch.Tensor) -> torch.Tensor:
        """``A^T W A h`` for ``h: (C, k, k)``."""
        spectrum = self._embed(h)[None] * self.sources
        predicted = torch.fft.irfft2(spectrum, s=self.shape) * self.weights
        back = torch.fft.rfft2(predicted) * self.sources.conj()
        return self._extract(torch.fft.irfft2(back.sum(dim=0), s=self.shape))


def build_fourier_system(problem: FitProblem, row: int, col: int, field: np.ndarray | None) -> FourierSystem:
    """Gather all observations of tile ``(row, col)`` (see ``FourierSystem``)."""
    k = problem.psf_size
    r = k // 2
    weight_map = tile_weight_map(problem.grid, problem.frame_size, row, col)
    region = weight_map > 1e-6
    field_zeroed = None
    if field is not None:
        field_zeroed = torch.from_numpy(np.array(field, dtype=np.float32))
        field_zeroed[row, col] = 0.0
    crops = []
    for pair in range(problem.targets.shape[0]):
        ys, xs = np.nonzero(region & problem.masks[pair])
        if ys.size:
            y0, y1 = int(ys.min()) - r, int(ys.max()) + r + 1
            x0, x1 = int(xs.min()) - r, int(xs.max()) + r + 1
            crops.append((pair, y0, y1, x0, x1))
    if not crops:
        raise TileFitError(f"tile ({row}, {col}): no registered pair covers it")
    height = max(y1 - y0 for _, y0, y1, _, _ in crops)
    width = max(x1 - x0 for _, _, _, x0, x1 in crops)
    shape = (fast_size(height + r), fast_size(width + r))
    channels = problem.channels
    sources = torch.zeros(len(crops), channels, *shape)
    targets = torch.zeros(len(crops), channels, *shape)
    weights = torch.zeros(len(crops), 1, *shape)
    for index, (pair, y0, y1, x0, x1) in enumerate(crops):
        x = torch.from_numpy(problem.targets[pair, :, y0:y1, x0:x1])
        w = torch.from_numpy(weight_map[y0:y1, x0:x1])
        observed = torch.from_numpy(problem.photos[pair, :, y0:y1, x0:x1])
        valid = torch.from_numpy(region[y0:y1, x0:x1] & problem.masks[pair, y0:y1, x0:x1]).float()
        if field_zeroed is None:
            sources[index, :, : y1 - y0, : x1 - x0] = x
            weights[index, 0, : y1 - y0, : x1 - x0] = valid * w
            targets[index, :, : y1 - y0, : x1 - x0] = observed
        else:
            sources[index, :, : y1 - y0, : x1 - x0] = x * w
            weights[index, 0, : y1 - y0, : x1 - x0] = valid
            with torch.no_grad():
                rest = sv_conv2d(
                    x[None], field_zeroed, offset=(y0, x0), frame_size=problem.frame_size, padding="zeros"
                )[0]
            targets[index, :, : y1 - y0, : x1 - x0] = observed - rest
    spectra = torch.fft.rfft2(sources)
    weighted = torch.fft.rfft2(targets * weights) * spectra.conj()
    rhs_full = torch.fft.irfft2(weighted.sum(dim=0), s=shape)
    rhs = torch.roll(rhs_full, shifts=(r, r), dims=(-2, -1))[:, :k, :k]
    # Mean diagonal of A^T W A: sum over observations of W s^2 (the shift of s by o changes it little).
    scale = (weights * sources**2).sum(dim=(0, 2, 3)).clamp(min=1e-12)
    fraction = weights.sum(dim=(1, 2, 3)) / (shape[0] * shape[1])
    power = (spectra.abs() ** 2 * fraction[:, None, None, None]).sum(dim=0) / (shape[0] * shape[1])
    return FourierSystem(
        sources=spectra,
        weights=weights,
        rhs=rhs,
        scale=scale,
        power=power,
        shape=shape,
        k=k,
        pairs=len(crops),
        pixels=int((weights > 0).sum()),
        data_norm=(weights * targets**2).sum(dim=(0, 2, 3)),
    )


FOURIER_TENSORS = ("sources", "weights", "rhs", "scale", "power", "data_norm")


def fourier_fidelity(system: FourierSystem, h: torch.Tensor) -> float:
    """Root-mean-square weighted residual ``sqrt(|W^(1/2) (A h - b)|^2 / sum W)`` over channels, from the
    normal equations (``h^T A^T W A h - 2 h^T A^T W b + b^T W b``), no extra pass over the pixels."""
    quadratic = (h * system.normal(h)).sum() - 2 * (h * system.rhs).sum() + system.data_norm.sum()
    count = system.weights.sum() * h.shape[0]
    return float((quadratic.clamp(min=0) / count).sqrt())


@dataclass(frozen=True)
class Regulariser:
    """Quadratic prior of the Fourier solve, weights relative to each channel's data scale.

    ``ridge``: ``|h|^2``; ``smooth``: ``|grad h|^2`` (the tails of a real PSF are smooth, the noise is
    not); ``centroid``: ``(sum h y)^2 + (sum h x)^2`` on ``centroid_channels`` — the stored convention
    that PSFs are centred (the reference's ``Centralized`` loss), the other channels keep their offset.
    """

    ridge: float
    smooth: float
    centroid: float
    centroid_channels: tuple[int, ...]

    def apply(self, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``R h`` for ``h: (..., C, k, k)`` with ``scale: (..., C)`` (the gradient of half the penalty)."""
        out = self.ridge * h
        if self.smooth > 0:
            out = out + self.smooth * _neumann_laplacian(h)
        if self.centroid > 0 and self.centroid_channels:
            k = h.shape[-1]
            coords = torch.arange(k, dtype=h.dtype, device=h.device) - k // 2
            yy, xx = coords[:, None].expand(k, k), coords[None, :].expand(k, k)
            out = out.clone()
            for ch in self.centroid_channels:
                my = (h[..., ch, :, :] * yy).sum(dim=(-1, -2))[..., None, None]
                mx = (h[..., ch, :, :] * xx).sum(dim=(-1, -2))[..., None, None]
                out[..., ch, :, :] += self.centroid * (my * yy + mx * xx)
        return out * scale[..., None, None]

    def power(self, shape: tuple[int, int]) -> torch.Tensor:
        """(Hf, Wf//2+1) the prior's strength per frequency (ridge + smooth), relative to the scale."""
        fy = torch.fft.fftfreq(shape[0])[:, None]
        fx = torch.fft.rfftfreq(shape[1])[None, :]
        laplacian = 4 * torch.sin(torch.pi * fy) ** 2 + 4 * torch.sin(torch.pi * fx) ** 2
        return self.ridge + self.smooth * laplacian


def tile_prior(config: CalibrateConfig, channels: int) -> Regulariser:
    """The prior of ``config``; the centroid term on the middle channel (green of R, G, B)."""
    return Regulariser(
        ridge=config.wiener_reg,
        smooth=config.smooth_reg,
        centroid=config.centroid_weight,
        centroid_channels=(channels // 2,),
    )


def _neumann_laplacian(h: torch.Tensor) -> torch.Tensor:
    """``D^T D h`` for forward differences ``D`` inside the ``k x k`` kernel (no wrap)."""
    out = torch.zeros_like(h)
    dy = h[..., 1:, :] - h[..., :-1, :]
    dx = h[..., :, 1:] - h[..., :, :-1]
    out[..., 1:, :] += dy
    out[..., :-1, :] -= dy
    out[..., :, 1:] += dx
    out[..., :, :-1] -= dx
    return out


@dataclass(frozen=True)
class Solve:
    """A Fourier solve: ``psf`` (C, k, k) normalised, CG ``iterations``, ``condition`` (of the regularised
    normal matrix, from the spectra, worst channel), ``observed_fraction`` (share of frequencies where the
    data outweigh the prior: 1 = the targets decide every frequency), ``relative_residual``."""

    psf: torch.Tensor
    iterations: int
    condition: float
    observed_fraction: float
    residual: float


def solve_fourier(
    system: FourierSystem,
    prior: Regulariser,
    start: torch.Tensor | None,
    support: torch.Tensor,
    iterations: int,
    tolerance: float = 1e-5,
) -> Solve:
    """Conjugate gradients on ``(A^T W A + R) h = A^T W b`` per channel (batched), from ``start``.

    Energy outside the allowed ``support`` (mask 1 = forbidden) is removed by restricting the unknowns.
    The result is clipped at zero and normalised.
    """
    allowed = (1.0 - support)[None]
    scale = system.scale

    def apply(h: torch.Tensor) -> torch.Tensor:
        h = h * allowed
        return (system.normal(h) + prior.apply(h, scale)) * allowed

    x = (start if start is not None else torch.zeros_like(system.rhs)) * allowed
    b = system.rhs * allowed
    residual = b - apply(x)
    direction = residual.clone()
    rho = (residual**2).sum(dim=(1, 2))
    b_norm = (b**2).sum(dim=(1, 2)).sqrt().clamp(min=1e-30)
    steps = 0
    for _ in range(iterations):
        steps += 1
        q = apply(direction)
        alpha = rho / (direction * q).sum(dim=(1, 2)).clamp(min=1e-30)
        x = x + alpha[:, None, None] * direction
        residual = residual - alpha[:, None, None] * q
        rho_next = (residual**2).sum(dim=(1, 2))
        beta = rho_next / rho.clamp(min=1e-30)
        direction = residual + beta[:, None, None] * direction
        rho = rho_next
        if float((rho.sqrt() / b_norm).max()) < tolerance:
            break
    # Conditioning from the spectra (the normal matrix is nearly a convolution): data power per
    # frequency, relative to its mean (the scale), against the prior's power at the same frequency.
    data = system.power / system.power.mean(dim=(1, 2), keepdim=True)
    regularised = data + prior.power(system.shape)[None]
    condition = float((regularised.amax(dim=(1, 2)) / regularised.amin(dim=(1, 2))).max())
    observed = data > prior.power(system.shape)[None]
    return Solve(
        psf=_normalise(x * allowed),
        iterations=steps,
        condition=condition,
        observed_fraction=float(observed.float().mean()),
        residual=float((rho.sqrt() / b_norm).max()),
    )


def _normalise(h: torch.Tensor) -> torch.Tensor:
    h = h.clamp(min=0.0)
    total = h.sum(dim=(-1, -2), keepdim=True)
    k = h.shape[-1]
    delta = torch.zeros_like(h)
    delta[..., k // 2, k // 2] = 1.0
    return torch.where(total > 1e-12, h / total.clamp(min=1e-12), delta)


def total_loss(
    h: torch.Tensor,
    system: TileSystem,
    support: torch.Tensor,
    config: CalibrateConfig,
    rows: slice | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(total, fidelity) for PSFs ``h: (C, k, k)``; the fidelity is weighted by the system's row weights.

    ``rows``: optional mini-batch of observations (a slice of the shuffled system, no copy).
    """
    if rows is not None:
        system = TileSystem(
            system.a[:, rows],
            system.observed[:, rows],
            system.fixed[:, rows],
            system.weights[rows],
            system.pairs,
        )
    error = (system.predict(h) - system.observed).abs()
    fidelity = (error * system.weights).sum() / (system.weights.sum() * error.shape[0])
    total = (
        config.alpha_fidelity * fidelity
        + config.beta_sum2one * losses.sum2one(h)
        + config.gamma_boundary * losses.boundary(h, support)
        + config.delta_symmetry * losses.symmetry(h)
    )
    return total, fidelity


class Adam:
    """Plain Adam (Kingma & Ba) for a few small tensors.

    ``torch.optim.Adam`` would do the same, but its first use imports ``torch._dynamo`` (seconds of
    start-up in every tile actor); this is the textbook update without that cost.
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.t))


def deep_linear_sizes(k: int) -> list[int]:
    """Layer sizes whose composition is ``k x k``: Chen et al.'s 7, 5, 3, 3, 3, 3, 3, 3 (23 x 23),
    shrunk from the front or extended with 3s to reach ``k``."""
    sizes = [7, 5, 3, 3, 3, 3, 3, 3]
    while sum(s - 1 for s in sizes) + 1 > k:
        if sizes[0] > 3:
            sizes[0] -= 2
        else:
            sizes.pop(0)
    while sum(s - 1 for s in sizes) + 1 < k:
        sizes.append(3)
    return sizes or [k]


class DeepLinearPSF(torch.nn.Module):
    """KernelGAN-style implicit PSF: a stack of linear convolutions (``width`` channels) whose
    composition, applied to a delta, is the ``(C, k, k)`` kernel (one stack per colour channel)."""

    def __init__(
        self, channels: int, k: int, width: int = 64, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.channels, self.k = channels, k
        self.sizes = deep_linear_sizes(k)
        ins = [1] + [width] * (len(self.sizes) - 1)
        outs = [width] * (len(self.sizes) - 1) + [1]
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(channels * o, i, s, s, generator=generator) / np.sqrt(i * s * s))
            for i, o, s in zip(ins, outs, self.sizes, strict=True)
        )

    def forward(self) -> torch.Tensor:
        x = torch.zeros(1, self.channels, self.k, self.k, device=self.weights[0].device)
        x[:, :, self.k // 2, self.k // 2] = 1.0
        for weight, size in zip(self.weights, self.sizes, strict=True):
            x = F.conv2d(x, weight, padding=size // 2, groups=self.channels)
        return x[0]


def descend_direct(
    h0: torch.Tensor, system: TileSystem, support: torch.Tensor, config: CalibrateConfig
) -> tuple[torch.Tensor, float]:
    """Adam on ``theta`` with ``h = theta^2`` (non-negative by construction) from ``h0``."""
    floor = 1e-4 * float(h0.max())
    theta = h0.clamp(min=floor).sqrt().clone().requires_grad_(True)
    optimiser = Adam([theta], lr=config.learning_rate)
    system, batches = _shuffled_batches(system, config)
    loss = torch.tensor(float("nan"))
    for rows in batches:
        optimiser.zero_grad()
        loss, _ = total_loss(theta**2, system, support, config, rows)
        loss.backward()
        optimiser.step()
    return theta.detach() ** 2, float(loss.detach())


def _shuffled_batches(system: TileSystem, config: CalibrateConfig) -> tuple[TileSystem, list[slice]]:
    """Shuffle the observations once (seeded) and cut them into contiguous mini-batches, one per step
    (epochs repeat the same order): slicing a view is free, gathering rows every step is not."""
    n = system.a.shape[1]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed)).to(system.a.device)
    shuffled = TileSystem(
        system.a[:, order].contiguous(),
        system.observed[:, order],
        system.fixed[:, order],
        system.weights[order],
        system.pairs,
    )
    size = max(1, min(config.batch_pixels, n))
    starts = [(step * size) % max(n - size + 1, 1) for step in range(config.iterations)]
    return shuffled, [slice(start, start + size) for start in starts]


def descend_deep_linear(
    h0: torch.Tensor, system: TileSystem, support: torch.Tensor, config: CalibrateConfig, seed: int
) -> tuple[torch.Tensor, float]:
    """Deep-linear parameterisation: distil the closed form into the network, then Adam on the loss."""
    generator = torch.Generator().manual_seed(seed)
    net = DeepLinearPSF(h0.shape[0], h0.shape[-1], config.deep_linear_width, generator).to(h0.device)
    optimiser = Adam(list(net.parameters()), lr=1e-3)
    for _ in range(config.deep_linear_warmup):
        optimiser.zero_grad()
        distil = ((net() - h0) ** 2).sum()
        distil.backward()
        optimiser.step()
    optimiser = Adam(list(net.parameters()), lr=config.deep_linear_lr)
    loss = torch.tensor(float("nan"))
    system, batches = _shuffled_batches(system, config)
    for rows in batches:
        optimiser.zero_grad()
        loss, _ = total_loss(net(), system, support, config, rows)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return net(), float(loss.detach())


def stage_device(config: CalibrateConfig) -> torch.device:
    """Where stage II computes: CUDA when ``gpus_per_actor > 0`` and a GPU is visible, else the CPU."""
    return torch.device("cuda" if config.gpus_per_actor > 0 and torch.cuda.is_available() else "cpu")


def fit_tile(
    problem: FitProblem,
    row: int,
    col: int,
    config: CalibrateConfig,
    field: np.ndarray | None = None,
    descend: bool = True,
) -> TileFit:
    """Fit tile ``(row, col)``'s PSF.

    Args:
        problem: the registered pairs.
        config: weights, ``iterations``, ``learning_rate``, ``psf_param``, ``support_radius``...
        field: (rows, cols, C, k, k) current field for the exact model; ``None`` = centre-weighted init.
        descend: run the Adam descent after the closed form (only meaningful with ``field``).

    Raises:
        TileFitError: no pair covers the tile.
    """
    began = time.perf_counter()
    torch.manual_seed(config.seed)
    k = problem.psf_size
    # Observations are gathered on the CPU; an actor given a GPU fraction solves and descends there.
    device = stage_device(config)
    support = losses.support_mask(k, config.support_radius).to(device)
    condition = observed = float("nan")
    with torch.no_grad():
        if config.solver == "fourier":
            fourier = build_fourier_system(problem, row, col, field)
            fourier = dataclasses.replace(
                fourier, **{name: getattr(fourier, name).to(device) for name in FOURIER_TENSORS}
            )
            prior = tile_prior(config, problem.channels)
            start = None if field is None else torch.from_numpy(np.array(field[row, col], np.float32))
            start = None if start is None else start.to(device)
            solved = solve_fourier(fourier, prior, start, support, config.cg_iterations)
            h, condition, observed = solved.psf, solved.condition, solved.observed_fraction
        descent = descend and field is not None and config.iterations > 0
        if config.solver == "patches" or descent:
            system = build_system(problem, row, col, field, config.max_pixels, config.seed)
            system = TileSystem(*(t.to(device) for t in dataclasses.astuple(system)[:4]), system.pairs)
        if config.solver == "patches":
            h = solve_least_squares(system, k, support, config.wiener_reg)
    if descent:
        if config.psf_param == "deep-linear":
            h, _ = descend_deep_linear(h, system, support, config, seed=config.seed * 7919 + row * 131 + col)
        else:
            h, _ = descend_direct(h, system, support, config)
        h = _normalise(h * (1.0 - support))
    if config.solver == "fourier" and not descent:
        loss = fidelity = fourier_fidelity(fourier, h)
        pairs, pixels = fourier.pairs, fourier.pixels
    else:
        with torch.no_grad():
            loss, fidelity = total_loss(h, system, support, config)
        pairs, pixels = system.pairs, int(system.observed.shape[1])
    return TileFit(
        row=row,
        col=col,
        psf=h.cpu().numpy().astype(np.float32),
        loss=float(loss),
        residual=float(fidelity),
        pairs=pairs,
        pixels=pixels,
        seconds=time.perf_counter() - began,
        condition=condition,
        observed_fraction=observed,
    )
