"""Stage II loss terms for PSFs ``h: (C, k, k)`` (pure torch, differentiable).

``L = alpha·L_fidelity + beta·L_sum2one + gamma·L_boundary + delta·L_sym``.
"""

from __future__ import annotations

import torch


def fidelity_l1(predicted: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between the re-blurred target and the photograph (linear RGB)."""
    return (predicted - observed).abs().mean()


def sum2one(h: torch.Tensor) -> torch.Tensor:
    """``|1 - sum(h)|`` per channel, summed over channels: zero for normalised PSFs."""
    return (1.0 - h.sum(dim=(-1, -2))).abs().sum()


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


def boundary(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum |h · m|``: energy outside the allowed support (zero when ``h`` lives inside it)."""
    return (h * mask).abs().sum()


def symmetry(h: torch.Tensor) -> torch.Tensor:
    """``sum (h - (h + h_sym)/2)^2`` with ``h_sym(i, j) = h(-i, -j)``: zero for centro-symmetric PSFs."""
    return ((h - 0.5 * (h + h.flip(-1, -2))) ** 2).sum()
