"""Pure-torch reference of the spatially variant (scatter) PSF convolution: the specification.

``y(p) = sum_q x(q) h_q(p - q)`` with ``h_q = sum_t w_t(q) h_t`` (bilinear weights of tile centres),
computed in product-convolution form ``y = sum_t h_t * (w_t . x)``, one ``F.conv2d`` per tile.
Works in any float dtype (float64 for gradcheck).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from degtrans.kernels._utils import pad_image
from degtrans.kernels.weights import padded_positions, tile_weights_1d


def padded_tile_weights(
    x: torch.Tensor, grid: tuple[int, int], halo: int, offset: tuple[int, int], frame: tuple[int, int],
    padding: str,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Separable tile weights over the padded patch ``x (B, C, H, W)``: ``(rows, H + 2*halo)`` and
    ``(cols, W + 2*halo)`` in ``x``'s dtype and device."""
    return tuple(
        tile_weights_1d(padded_positions(x.shape[2 + i], halo, offset[i], frame[i], padding, x.device),
                        grid[i], frame[i], x.dtype)
        for i in range(2)
    )  # fmt: skip


def sv_conv2d_reference(
    x: torch.Tensor,
    field_psfs: torch.Tensor,
    *,
    offset: tuple[int, int] = (0, 0),
    frame_size: tuple[int, int] | None = None,
    padding: str = "reflect",
) -> torch.Tensor:
    """Spatially variant scatter convolution, reference implementation.

    Args:
        x: (B, C, H, W) image (linear intensities).
        field_psfs: (rows, cols, C, k, k) PSFs of the tile centres, k odd.
        offset: (y0, x0) of the patch's top-left pixel on the sensor.
        frame_size: (H, W) of the sensor frame the field covers; defaults to the patch size.
        padding: ``"reflect"`` or ``"zeros"``.

    Returns:
        (B, C, H, W) blurred image.
    """
    rows, cols, channels, k, _ = field_psfs.shape
    halo = k // 2
    height, width = x.shape[-2:]
    frame = frame_size if frame_size is not None else (height, width)
    wy, wx = padded_tile_weights(x, (rows, cols), halo, offset, frame, padding)
    x_pad = pad_image(x, halo, padding)
    out = torch.zeros_like(x)
    for r in range(rows):
        for c in range(cols):
            weight = wy[r][:, None] * wx[c][None, :]
            if not bool(weight.any()):
                continue
            kernel = field_psfs[r, c].flip(-1, -2).unsqueeze(1).to(x.dtype)
            out = out + F.conv2d(x_pad * weight, kernel, groups=channels)
    return out
