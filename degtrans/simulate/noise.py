"""Heteroscedastic sensor noise: shot (signal-dependent) plus read noise, in linear raw units.

Variance model (Brooks et al. 2019): ``var(x) = shot * x + read``. Per sample, ``shot`` is drawn
log-uniformly and ``read`` follows the camera's calibrated log-linear relation
``ln(read) = slope * ln(shot) + intercept + N(0, sigma^2)``. Images whose levels are not known get
their read variance estimated from their finest detail (:func:`estimate_noise_variance`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from degtrans.errors import InputError


@dataclass(frozen=True)
class NoiseModel:
    """A camera's noise calibration (defaults: Brooks et al.'s fit to the Darmstadt cameras)."""

    shot_min: float = 1e-4
    shot_max: float = 1.2e-2
    read_slope: float = 2.18
    read_intercept: float = 1.20
    read_sigma: float = 0.26

    def __post_init__(self) -> None:
        if not 0 < self.shot_min <= self.shot_max:
            raise InputError(
                f"noise model: need 0 < shot_min <= shot_max, got {self.shot_min}, {self.shot_max}"
            )


DEFAULT_NOISE = NoiseModel()


@dataclass(frozen=True)
class NoiseParams:
    """Per-sample noise levels: ``shot`` and ``read`` (B,), variances in linear [0, 1] units."""

    shot: torch.Tensor
    read: torch.Tensor


def sample_noise_params(
    generator: torch.Generator, model: NoiseModel = DEFAULT_NOISE, batch: int = 1
) -> NoiseParams:
    """Draw ``batch`` (shot, read) pairs from ``model`` (float64)."""
    low, high = math.log(model.shot_min), math.log(model.shot_max)
    log_shot = low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)
    jitter = model.read_sigma * torch.randn(batch, generator=generator, dtype=torch.float64)
    log_read = model.read_slope * log_shot + model.read_intercept + jitter
    return NoiseParams(shot=log_shot.exp(), read=log_read.exp())


def noise_variance(x: torch.Tensor, params: NoiseParams) -> torch.Tensor:
    """Per-pixel variance ``shot * x + read`` of a linear image ``x (B, C, H, W)``."""
    shot = params.shot.to(device=x.device, dtype=x.dtype)[:, None, None, None]
    read = params.read.to(device=x.device, dtype=x.dtype)[:, None, None, None]
    return shot * x.clamp(min=0.0) + read


def estimate_noise_variance(x: torch.Tensor) -> torch.Tensor:
    """(N,) white-noise variance of ``x (N, ..., H, W)``, pooled over all but the first dimension.

    Donoho's median absolute deviation of the finest diagonal Haar band ``(a - b - c + d) / 2``, whose
    variance is the pixels' own for white noise; a trailing odd row or column is left out.
    """
    x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
    band = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    return (band.flatten(1).abs().median(dim=1).values / 0.6745) ** 2


def standard_noise(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal draws of ``shape`` from ``generator``, on its device (the CPU): the noise is then
    the same wherever the image is processed."""
    return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device)


def add_standard_noise(x: torch.Tensor, params: NoiseParams, z: torch.Tensor) -> torch.Tensor:
    """``x (B, C, H, W)`` plus ``z`` (standard normal draws of x's shape) scaled to :func:`noise_variance`."""
    return x + z * noise_variance(x, params).sqrt()
