"""Field-of-view coordinates of patch pixels: what tells a blind network where on the sensor it is."""

from __future__ import annotations

import math

import torch


def fov_coords(
    y0: torch.Tensor | int,
    x0: torch.Tensor | int,
    frame_h: torch.Tensor | int,
    frame_w: torch.Tensor | int,
    height: int,
    width: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Normalised sensor position ``x, y`` in [-1, 1] and radius ``r`` in [0, 1] of every pixel.

    Args:
        y0, x0: (B,) or scalar top-left corner of each patch on the sensor, in pixels.
        frame_h, frame_w: (B,) or scalar sensor size in pixels.
        height, width: patch size in pixels.

    Returns:
        (B, 3, height, width) float32 ``(x, y, r)``; pixel ``i`` at ``i + 0.5``, ``r = 1`` at corners.
    """

    def column(value: torch.Tensor | int) -> torch.Tensor:
        return torch.as_tensor(value, dtype=torch.float64, device=device).reshape(-1, 1)

    y0, x0, frame_h, frame_w = (column(v) for v in (y0, x0, frame_h, frame_w))
    iy = torch.arange(height, dtype=torch.float64, device=device) + 0.5
    ix = torch.arange(width, dtype=torch.float64, device=device) + 0.5
    ny = (y0 + iy) / frame_h * 2.0 - 1.0
    nx = (x0 + ix) / frame_w * 2.0 - 1.0
    batch = max(ny.shape[0], nx.shape[0])
    ny = ny.expand(batch, height)[:, :, None].expand(batch, height, width)
    nx = nx.expand(batch, width)[:, None, :].expand(batch, height, width)
    radius = torch.sqrt(nx**2 + ny**2) / math.sqrt(2.0)
    return torch.stack([nx, ny, radius], dim=1).float()


def zone_of(radius: float) -> str:
    """Field zone of a normalised radius: ``centre`` (< 1/3), ``mid`` (< 2/3) or ``corner``."""
    if radius < 1.0 / 3.0:
        return "centre"
    return "mid" if radius < 2.0 / 3.0 else "corner"


def patch_radius(y0: float, x0: float, height: int, width: int, frame_h: int, frame_w: int) -> float:
    """Normalised radius of a patch's centre (same convention as :func:`fov_coords`)."""
    ny = (y0 + height / 2) / frame_h * 2.0 - 1.0
    nx = (x0 + width / 2) / frame_w * 2.0 - 1.0
    return math.hypot(nx, ny) / math.sqrt(2.0)
