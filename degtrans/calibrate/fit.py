"""Per-tile degradation transfer (stage II): fit tile ``(r, c)``'s PSF from every pair that covers it.

The photograph of a tile is made by the *interpolated* field (``sv_conv2d``: ``y = sum_t h_t * (w_t x)``
with the bilinear tile weights ``w_t``), so one PSF per tile fitted to the tile region alone is biased
toward its neighbours (first order at the frame border, where the weights are clamped). A tile's fit
(:func:`fit_tile`) is a regularised least-squares solve by conjugate gradients whose normal products
are FFTs over a crop of the tile's region of influence (:class:`FourierSystem`; the kernel's side is
the PSF model of ``degtrans.kernels.spectral``), so every pixel of the region is used whatever ``k``.
The fit is an init: a single PSF over the tile's region, rows weighted by ``w_rc`` (centre-weighted).

The prior (``calibrate.priors``) is the same quadratic one the joint solve of all tiles
(``calibrate.joint``) uses; the init here is its start. The solve is a masked, non-periodic crop (no
window or wrap-around bias). Every function is deterministic: the same inputs give the same PSF.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from degtrans.calibrate.priors import Regulariser, normalise, support_mask, tile_prior
from degtrans.config import CalibrateConfig
from degtrans.errors import DegtransError, InputError
from degtrans.kernels.spectral import fast_fft_len, otf_to_psf, psf_to_otf
from degtrans.kernels.weights import tile_weights_1d


class TileFitError(DegtransError):
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
            raise InputError(
                f"FitProblem: psf_size (calibrate.psf_size, --psf-size) must be odd, got {self.psf_size}"
            )

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.targets.shape[2]), int(self.targets.shape[3])

    @property
    def channels(self) -> int:
        return int(self.targets.shape[1])

    @classmethod
    def stack(
        cls,
        pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
        names: tuple[str, ...],
        grid: tuple[int, int],
        k: int,
    ) -> FitProblem:
        """``[(target, photo, mask)]``, (H, W, C) / (H, W, C) / (H, W) bool each, as one problem; a pixel
        observes only if its whole ``k x k`` footprint is valid target (the masks are eroded)."""
        kernel = np.ones((k, k), np.uint8)
        return cls(
            targets=np.stack([t.transpose(2, 0, 1) for t, _, _ in pairs]).astype(np.float32),
            photos=np.stack([p.transpose(2, 0, 1) for _, p, _ in pairs]).astype(np.float32),
            masks=np.stack([cv2.erode(m.astype(np.uint8), kernel, borderValue=0) > 0 for _, _, m in pairs]),
            names=names,
            grid=grid,
            psf_size=k,
        )


@dataclass(frozen=True)
class TileFit:
    """One tile's result.

    Attributes:
        psf: (C, k, k) float32, non-negative, each channel summing to 1.
        residual: RMS re-blur error over the tile's observations (linear RGB).
        pairs: number of pairs that cover the tile.
        pixels: observations used.
        seconds: wall time of this fit.
        condition: the regularised normal matrix's condition number, estimated from the spectra.
        observed_fraction: share of the kernel's frequencies where the targets, not the prior, decide.
    """

    psf: np.ndarray
    residual: float
    pairs: int
    pixels: int
    seconds: float
    condition: float = float("nan")
    observed_fraction: float = float("nan")


def tile_axes(grid: tuple[int, int], frame: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Separable bilinear tile weights as ``sv_conv2d`` uses them: ``(rows, H)`` and ``(cols, W)``
    float64; ``w_(r,c) = wy[r] x wx[c]``."""
    wy = tile_weights_1d(torch.arange(frame[0]), grid[0], frame[0], torch.float64)
    wx = tile_weights_1d(torch.arange(frame[1]), grid[1], frame[1], torch.float64)
    return wy.numpy(), wx.numpy()


def tile_weight_map(grid: tuple[int, int], frame_size: tuple[int, int], row: int, col: int) -> np.ndarray:
    """(H, W) float32 bilinear weight of tile ``(row, col)`` at every pixel."""
    wy, wx = tile_axes(grid, frame_size)
    return (wy[row][:, None] * wx[col][None, :]).astype(np.float32)


@dataclass(frozen=True)
class FourierSystem:
    """Every observation of one tile, as FFTs over a crop of its region of influence.

    The model of a pair's crop is ``photo = W * (x * h)`` with ``x`` the source and ``W`` the row weights
    ``w_rc`` times the mask. Products with the normal matrix cost a few FFTs, whatever ``k`` and the number of
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

    def normal(self, h: torch.Tensor) -> torch.Tensor:
        """``A^T W A h`` for ``h: (C, k, k)``."""
        spectrum = psf_to_otf(h, *self.shape)[None] * self.sources
        predicted = torch.fft.irfft2(spectrum, s=self.shape) * self.weights
        back = torch.fft.rfft2(predicted) * self.sources.conj()
        return otf_to_psf(back.sum(dim=0), self.k, *self.shape)


def build_fourier_system(problem: FitProblem, row: int, col: int) -> FourierSystem:
    """Gather all observations of tile ``(row, col)`` (see ``FourierSystem``)."""
    k = problem.psf_size
    r = k // 2
    weight_map = tile_weight_map(problem.grid, problem.frame_size, row, col)
    region = weight_map > 1e-6
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
    shape = (fast_fft_len(height + r), fast_fft_len(width + r))
    channels = problem.channels
    sources = torch.zeros(len(crops), channels, *shape)
    targets = torch.zeros(len(crops), channels, *shape)
    weights = torch.zeros(len(crops), 1, *shape)
    for index, (pair, y0, y1, x0, x1) in enumerate(crops):
        x = torch.from_numpy(problem.targets[pair, :, y0:y1, x0:x1])
        w = torch.from_numpy(weight_map[y0:y1, x0:x1])
        observed = torch.from_numpy(problem.photos[pair, :, y0:y1, x0:x1])
        valid = torch.from_numpy(region[y0:y1, x0:x1] & problem.masks[pair, y0:y1, x0:x1]).float()
        sources[index, :, : y1 - y0, : x1 - x0] = x
        weights[index, 0, : y1 - y0, : x1 - x0] = valid * w
        targets[index, :, : y1 - y0, : x1 - x0] = observed
    spectra = torch.fft.rfft2(sources)
    weighted = torch.fft.rfft2(targets * weights) * spectra.conj()
    rhs = otf_to_psf(weighted.sum(dim=0), k, *shape)
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


def fourier_fidelity(system: FourierSystem, h: torch.Tensor) -> float:
    """Root-mean-square weighted residual ``sqrt(|W^(1/2) (A h - b)|^2 / sum W)`` over channels, from the
    normal equations (``h^T A^T W A h - 2 h^T A^T W b + b^T W b``), no extra pass over the pixels."""
    quadratic = (h * system.normal(h)).sum() - 2 * (h * system.rhs).sum() + system.data_norm.sum()
    count = system.weights.sum() * h.shape[0]
    return float((quadratic.clamp(min=0) / count).sqrt())


@dataclass(frozen=True)
class Solve:
    """A Fourier solve: ``psf`` (C, k, k) normalised, ``condition`` (of the regularised normal matrix, from
    the spectra, worst channel), ``observed_fraction`` (share of frequencies where the data outweigh the
    prior: 1 = the targets decide every frequency)."""

    psf: torch.Tensor
    condition: float
    observed_fraction: float


def solve_fourier(
    system: FourierSystem,
    prior: Regulariser,
    support: torch.Tensor,
    iterations: int,
    tolerance: float = 1e-5,
) -> Solve:
    """Conjugate gradients on ``(A^T W A + R) h = A^T W b`` per channel (batched), from zero.

    Energy outside the allowed ``support`` (mask 1 = forbidden) is removed by restricting the unknowns.
    The result is clipped at zero and normalised.
    """
    allowed = (1.0 - support)[None]

    def apply(h: torch.Tensor) -> torch.Tensor:
        h = h * allowed
        return (system.normal(h) + prior.apply(h, system.scale)) * allowed

    x = torch.zeros_like(system.rhs)
    b = system.rhs * allowed
    residual = b - apply(x)
    direction = residual.clone()
    rho = (residual**2).sum(dim=(1, 2))
    b_norm = (b**2).sum(dim=(1, 2)).sqrt().clamp(min=1e-30)
    for _ in range(iterations):
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
        psf=normalise(x * allowed), condition=condition, observed_fraction=float(observed.float().mean())
    )


def stage_device(config: CalibrateConfig) -> torch.device:
    """Where stage II computes: CUDA when ``ray.gpus_per_actor > 0`` and a GPU is visible, else the CPU."""
    return torch.device("cuda" if config.ray.gpus_per_actor > 0 and torch.cuda.is_available() else "cpu")


def fit_tile(problem: FitProblem, row: int, col: int, config: CalibrateConfig) -> TileFit:
    """Fit tile ``(row, col)``'s centre-weighted init PSF by :func:`solve_fourier`.

    Args:
        problem: the registered pairs.
        config: ``solve``'s prior (``wiener_reg``, ``smooth_reg``, ``centroid_weight``),
            ``cg_iterations`` and ``support_radius``; ``ray.gpus_per_actor`` (the device).

    Raises:
        TileFitError: no pair covers the tile.
    """
    began = time.perf_counter()
    # Observations are gathered on the CPU; an actor given a GPU fraction solves there.
    device = stage_device(config)
    support = support_mask(problem.psf_size, config.solve.support_radius).to(device)
    with torch.no_grad():
        system = build_fourier_system(problem, row, col)
        system = dataclasses.replace(
            system,
            **{
                name: getattr(system, name).to(device)
                for name in ("sources", "weights", "rhs", "scale", "power", "data_norm")
            },
        )
        prior = tile_prior(config, problem.channels)
        solved = solve_fourier(system, prior, support, config.solve.cg_iterations)
    return TileFit(
        psf=solved.psf.cpu().numpy().astype(np.float32),
        residual=fourier_fidelity(system, solved.psf),
        pairs=system.pairs,
        pixels=system.pixels,
        seconds=time.perf_counter() - began,
        condition=solved.condition,
        observed_fraction=solved.observed_fraction,
    )
