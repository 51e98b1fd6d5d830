"""The camera ISP as a chain of tiny pure functions and their inverses (Brooks et al. 2019).

``unprocess`` takes a processed sRGB-like image back to linear camera RGB; ``process`` goes forward
(white balance, colour correction, gamma, tone curve). Every random choice lives in ``ISPParams``,
sampled once by ``sample_isp_params`` and applied to both images of a pair. ``srgb_to_linear`` and
``linear_to_srgb`` (the sRGB transfer curve) stand in for the ISP where its draw is unknown.

Images are ``(B, 3, H, W)`` float tensors; per-sample parameters have a leading batch dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

# Linear sRGB (D65) -> CIE XYZ, IEC 61966-2-1.
SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
GAMMA = 2.2
HIGHLIGHT_INFLECTION = 0.9


@dataclass(frozen=True)
class ISPRanges:
    """Where the random ISP parameters are drawn from (defaults: Brooks et al. 2019).

    Attributes:
        rgb_gain_mean, rgb_gain_std: the brightness gain is ``1 / N(mean, std)``.
        red_gain, blue_gain: uniform white-balance gain ranges used without a camera profile.
        wb_jitter: with a camera profile, its as-shot gains times ``U(1 - jitter, 1 + jitter)``.
    """

    rgb_gain_mean: float = 0.8
    rgb_gain_std: float = 0.1
    red_gain: tuple[float, float] = (1.9, 2.4)
    blue_gain: tuple[float, float] = (1.5, 1.9)
    wb_jitter: float = 0.1


DEFAULT_RANGES = ISPRanges()


@dataclass(frozen=True)
class ISPParams:
    """One ISP draw per sample.

    Attributes:
        rgb2cam: (B, 3, 3) linear sRGB -> camera RGB, rows summing to 1.
        rgb_gain: (B,) brightness gain undone by ``unprocess``.
        red_gain, blue_gain: (B,) white-balance gains (camera RGB -> white-balanced).
    """

    rgb2cam: torch.Tensor
    rgb_gain: torch.Tensor
    red_gain: torch.Tensor
    blue_gain: torch.Tensor

    @property
    def cam2rgb(self) -> torch.Tensor:
        """(B, 3, 3) camera RGB -> linear sRGB, rows summing to 1."""
        return normalise_rows(torch.linalg.inv(self.rgb2cam))

    @property
    def batch(self) -> int:
        return int(self.rgb_gain.shape[0])

    def vector(self) -> torch.Tensor:
        """(B, 12) the draws packed in ``degtrans.pairs.ISP_COLUMNS`` order: rgb_gain, red_gain, blue_gain,
        rgb2cam row-major (the dataset's columns and the networks' ``isp`` input)."""
        gains = torch.stack([self.rgb_gain, self.red_gain, self.blue_gain], dim=1)
        return torch.cat([gains, self.rgb2cam.reshape(-1, 9)], dim=1)

    @classmethod
    def from_vector(cls, vector: torch.Tensor) -> ISPParams:
        """Inverse of :meth:`vector`: ``vector (B, 12)`` -> B draws (views of it, its dtype)."""
        if vector.dim() != 2 or vector.shape[1] != 12:
            raise ValueError(f"ISPParams.from_vector: expected (B, 12) parameters, got {tuple(vector.shape)}")
        rgb2cam = vector[:, 3:].reshape(-1, 3, 3)
        return cls(rgb2cam=rgb2cam, rgb_gain=vector[:, 0], red_gain=vector[:, 1], blue_gain=vector[:, 2])


class CameraColour(Protocol):
    """What :func:`sample_isp_params` reads of a camera profile: colour matrix, as-shot white balance."""

    @property
    def rgb2cam(self) -> np.ndarray: ...

    @property
    def wb_gains(self) -> tuple[float, float, float]: ...


def normalise_rows(matrix: torch.Tensor) -> torch.Tensor:
    """Scale each row of ``(..., 3, 3)`` to sum to 1 (white stays white)."""
    return matrix / matrix.sum(dim=-1, keepdim=True)


def rgb_to_cam_matrix(xyz_to_cam: np.ndarray) -> np.ndarray:
    """Linear sRGB -> camera RGB from a DNG-style ColorMatrix (XYZ -> camera), rows normalised."""
    rgb2cam = np.asarray(xyz_to_cam, dtype=np.float64) @ SRGB_TO_XYZ
    return rgb2cam / rgb2cam.sum(axis=-1, keepdims=True)


def _uniform(generator: torch.Generator, batch: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)


def sample_isp_params(
    generator: torch.Generator,
    ranges: ISPRanges = DEFAULT_RANGES,
    camera: CameraColour | None = None,
    batch: int = 1,
) -> ISPParams:
    """Draw ``batch`` ISP parameter sets (float64).

    With a camera profile the colour matrix is the camera's and the white balance its as-shot gains,
    jittered; without one the matrix is the identity and the gains are Brooks et al.'s ranges.
    """
    rgb_gain = 1.0 / (
        ranges.rgb_gain_mean
        + ranges.rgb_gain_std * torch.randn(batch, generator=generator, dtype=torch.float64)
    )
    rgb_gain = rgb_gain.clamp(0.5, 3.0)
    if camera is None:
        rgb2cam = torch.eye(3, dtype=torch.float64).expand(batch, 3, 3).clone()
        red = _uniform(generator, batch, *ranges.red_gain)
        blue = _uniform(generator, batch, *ranges.blue_gain)
    else:
        rgb2cam = torch.as_tensor(camera.rgb2cam, dtype=torch.float64).expand(batch, 3, 3).clone()
        gains = camera.wb_gains
        jitter = ranges.wb_jitter
        red = gains[0] * _uniform(generator, batch, 1 - jitter, 1 + jitter)
        blue = gains[2] * _uniform(generator, batch, 1 - jitter, 1 + jitter)
    return ISPParams(rgb2cam=rgb2cam, rgb_gain=rgb_gain, red_gain=red, blue_gain=blue)


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    """Global tone curve ``3x^2 - 2x^3`` on [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return x * x * (3 - 2 * x)


def inverse_smoothstep(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`smoothstep` on [0, 1]."""
    y = y.clamp(0.0, 1.0)
    return 0.5 - torch.sin(torch.asin(1.0 - 2.0 * y) / 3.0)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """Inverse sRGB transfer curve, values in [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """sRGB transfer curve, values clipped to [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=1e-12) ** (1 / 2.4) - 0.055)


def gamma_expansion(x: torch.Tensor) -> torch.Tensor:
    """Display gamma -> linear intensities."""
    return x.clamp(min=1e-8) ** GAMMA


def gamma_compression(x: torch.Tensor) -> torch.Tensor:
    """Linear intensities -> display gamma."""
    return x.clamp(min=1e-8) ** (1.0 / GAMMA)


def apply_ccm(x: torch.Tensor, ccm: torch.Tensor) -> torch.Tensor:
    """Per-pixel colour matrix: ``x (B, 3, H, W)``, ``ccm (B, 3, 3)`` -> ``ccm @ x``."""
    return torch.einsum("bij,bjhw->bihw", ccm.to(device=x.device, dtype=x.dtype), x)


def total_gains(params: ISPParams, like: torch.Tensor) -> torch.Tensor:
    """(B, 3, 1, 1) total gains of ``process`` (white balance times brightness)."""
    ones = torch.ones_like(params.red_gain)
    gains = torch.stack([params.red_gain, ones, params.blue_gain], dim=1) * params.rgb_gain[:, None]
    return gains.to(device=like.device, dtype=like.dtype)[:, :, None, None]


def apply_gains(x: torch.Tensor, params: ISPParams) -> torch.Tensor:
    """White balance and brightness: camera RGB -> balanced camera RGB."""
    return x * total_gains(params, x)


def safe_invert_gains(x: torch.Tensor, params: ISPParams) -> torch.Tensor:
    """Invert :func:`apply_gains`, blending toward gain 1 for bright pixels so highlights stay unclipped."""
    inverse = 1.0 / total_gains(params, x)
    grey = x.mean(dim=1, keepdim=True)
    mask = ((grey - HIGHLIGHT_INFLECTION).clamp(min=0.0) / (1.0 - HIGHLIGHT_INFLECTION)) ** 2
    return x * torch.maximum(mask + (1.0 - mask) * inverse, inverse)


def unprocess(srgb: torch.Tensor, params: ISPParams) -> torch.Tensor:
    """Processed sRGB-like ``(B, 3, H, W)`` in [0, 1] -> linear camera RGB in [0, 1]."""
    x = inverse_smoothstep(srgb)
    x = gamma_expansion(x)
    x = apply_ccm(x, params.rgb2cam)
    x = safe_invert_gains(x, params)
    return x.clamp(0.0, 1.0)


def process(linear_cam: torch.Tensor, params: ISPParams) -> torch.Tensor:
    """Linear camera RGB ``(B, 3, H, W)`` (demosaicked) -> processed sRGB-like in [0, 1]."""
    x = apply_gains(linear_cam, params).clamp(0.0, 1.0)
    x = apply_ccm(x, params.cam2rgb).clamp(0.0, 1.0)
    x = gamma_compression(x)
    return smoothstep(x)
