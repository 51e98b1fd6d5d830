"""Bayer colour filter array: mosaic and demosaic (bilinear, Malvar-He-Cutler 2004).

The CFA is fixed to the sensor: pixel ``(y, x)`` of the frame has colour
``pattern[(y % 2) * 2 + (x % 2)]``. A patch cut at ``offset = (y0, x0)`` therefore sees the phase of
its position, which keeps a patch equal to the same crop of the full frame. Reflect padding
(edge not repeated) keeps the parity of every index, so the pattern continues across borders and
both demosaicking methods are exact on constant images, borders included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from degtrans.errors import InputError

PATTERNS: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")
_CHANNEL = {"R": 0, "G": 1, "B": 2}


def phase_pattern(pattern: str, offset: tuple[int, int]) -> str:
    """The 2x2 pattern seen from a patch whose top-left pixel sits at ``offset`` on the sensor."""
    if pattern not in PATTERNS:
        raise InputError(f"CFA pattern must be one of {list(PATTERNS)}, got {pattern!r}")
    dy, dx = offset[0] % 2, offset[1] % 2
    return "".join(pattern[((i + dy) % 2) * 2 + (j + dx) % 2] for i in range(2) for j in range(2))


def cfa_masks(
    pattern: str,
    height: int,
    width: int,
    offset: tuple[int, int] = (0, 0),
    device: torch.device | None = None,
) -> torch.Tensor:
    """(3, H, W) one-hot masks: which colour each pixel of the patch records."""
    local = phase_pattern(pattern, offset)
    masks = torch.zeros(3, height, width, device=device)
    for i in range(2):
        for j in range(2):
            masks[_CHANNEL[local[i * 2 + j]], i::2, j::2] = 1.0
    return masks


def cfa_masks_batch(
    patterns: Sequence[str],
    offsets: Sequence[tuple[int, int]],
    height: int,
    width: int,
    device: torch.device | None = None,
) -> torch.Tensor:
    """(B, 3, H, W) :func:`cfa_masks` of B patches, each with its own pattern and sensor offset."""
    local = [phase_pattern(p, (int(o[0]), int(o[1]))) for p, o in zip(patterns, offsets, strict=True)]
    distinct = sorted(set(local))
    masks = torch.stack([cfa_masks(p, height, width, device=device) for p in distinct])
    return masks[torch.tensor([distinct.index(p) for p in local], device=device)]


def mosaic_masked(rgb: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Sample ``rgb (B, 3, H, W)`` through the CFA given as masks, (3, H, W) (:func:`cfa_masks`) or
    (B, 3, H, W) (:func:`cfa_masks_batch`) -> ``(B, 1, H, W)`` Bayer mosaic."""
    return (rgb * masks.to(rgb.dtype)).sum(dim=1, keepdim=True)


def _reflect(x: torch.Tensor, pad: int) -> torch.Tensor:
    if x.shape[-1] > pad and x.shape[-2] > pad:
        return F.pad(x, (pad, pad, pad, pad), mode="reflect")
    raise ValueError(
        f"demosaic: image {tuple(x.shape[-2:])} is too small for a {2 * pad + 1}x{2 * pad + 1} filter"
    )


def _bilinear(raw: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Bilinear demosaicking: ``raw (B, 1, H, W)`` -> ``(B, 3, H, W)``."""
    planes = raw * masks.to(raw.dtype)
    rb, g = [[1, 2, 1], [2, 4, 2], [1, 2, 1]], [[0, 1, 0], [1, 4, 1], [0, 1, 0]]
    kernels = torch.tensor([rb, g, rb], dtype=raw.dtype, device=raw.device)[:, None] / 4
    return F.conv2d(_reflect(planes, 1), kernels, groups=3)


def _malvar_kernels(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(4, 1, 5, 5): G at R/B; R/B at G in an R/B row; R/B at G in the other row; R at B (and B at R)."""
    g_at_rb = [[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]]
    same_row = [[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]]
    same_col = [list(row) for row in zip(*same_row, strict=True)]
    diagonal = [
        [0, 0, -1.5, 0, 0],
        [0, 2, 0, 2, 0],
        [-1.5, 0, 6, 0, -1.5],
        [0, 2, 0, 2, 0],
        [0, 0, -1.5, 0, 0],
    ]
    return torch.tensor([g_at_rb, same_row, same_col, diagonal], dtype=dtype, device=device)[:, None] / 8


def _malvar(raw: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Malvar-He-Cutler gradient-corrected linear demosaicking: ``(B, 1, H, W)`` -> ``(B, 3, H, W)``."""
    m = masks.to(raw.dtype).unbind(-3)
    g_at_rb, along_row, along_col, diagonal = F.conv2d(
        _reflect(raw, 2), _malvar_kernels(raw.dtype, raw.device)
    ).unbind(1)
    raw = raw[:, 0]
    is_r, is_g, is_b = m[0], m[1], m[2]
    # Bayer rows alternate: a green pixel shares its row with either red or blue pixels.
    red_row = (is_r.sum(dim=-1, keepdim=True) > 0).to(raw.dtype)
    g_in_r_row = is_g * red_row
    g_in_b_row = is_g - g_in_r_row
    red = is_r * raw + g_in_r_row * along_row + g_in_b_row * along_col + is_b * diagonal
    blue = is_b * raw + g_in_b_row * along_row + g_in_r_row * along_col + is_r * diagonal
    green = is_g * raw + (is_r + is_b) * g_at_rb
    return torch.stack([red, green, blue], dim=1)


DEMOSAIC = {"bilinear": _bilinear, "malvar": _malvar}


def demosaic(
    raw: torch.Tensor,
    pattern: str = "RGGB",
    offset: tuple[int, int] = (0, 0),
    method: Literal["bilinear", "malvar"] = "malvar",
) -> torch.Tensor:
    """Demosaic ``raw (B, 1, H, W)`` with ``method`` -> ``(B, 3, H, W)``."""
    return demosaic_masked(raw, cfa_masks(pattern, raw.shape[-2], raw.shape[-1], offset, raw.device), method)


def demosaic_masked(
    raw: torch.Tensor, masks: torch.Tensor, method: Literal["bilinear", "malvar"] = "malvar"
) -> torch.Tensor:
    """:func:`demosaic` with the CFA given as masks, (3, H, W) or (B, 3, H, W) (:func:`cfa_masks_batch`)."""
    if method not in DEMOSAIC:
        raise ValueError(f"demosaic method must be one of {list(DEMOSAIC)}, got {method!r}")
    return DEMOSAIC[method](raw, masks)
