"""Stage II's prior on a PSF ``h: (..., C, k, k)``: the quadratic regulariser of the Fourier and joint
solves, the support it may occupy, and the clip-and-normalise both apply to their result."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from degtrans.config import CalibrateConfig


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
        ridge=config.solve.wiener_reg,
        smooth=config.solve.smooth_reg,
        centroid=config.solve.centroid_weight,
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


def support_mask(k: int, radius: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(k, k) mask ``m``: 1 outside the disc of ``radius`` pixels about the centre, 0 inside.

    ``radius <= 0`` means the inscribed disc (``k // 2``).
    """
    if k < 1 or k % 2 == 0:
        raise ValueError(f"support_mask: k must be odd and positive, got {k}")
    radius = float(k // 2) if radius <= 0 else float(radius)
    coords = torch.arange(k, dtype=torch.float64) - k // 2
    distance = torch.hypot(coords[:, None], coords[None, :])
    return (distance > radius + 1e-9).to(dtype)


def normalise(h: torch.Tensor) -> torch.Tensor:
    """(..., k, k) kernels clipped at zero and scaled to sum 1 (a centred delta where nothing is left)."""
    h = h.clamp(min=0.0)
    total = h.sum(dim=(-1, -2), keepdim=True)
    k = h.shape[-1]
    delta = torch.zeros_like(h)
    delta[..., k // 2, k // 2] = 1.0
    return torch.where(total > 1e-12, h / total.clamp(min=1e-12), delta)
