"""Helpers every kernel's dispatch, reference, CPU path and autograd wrapper share (torch only).

Triton-side helpers (autotune configs, launch grids) are in ``_triton_utils.py``: only files named
``_triton*.py`` import triton.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from degtrans.kernels.weights import padded_positions

# Read once at import: tests/conftest.py sets it before degtrans is imported.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

_HALF = (torch.float16, torch.bfloat16)


def check_choice(op: str, argument: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming ``op`` and ``argument`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{op}: {argument} must be one of {choices}, got {value!r}")


def kernel_size(taps: int) -> int:
    """``k`` of a square kernel with ``taps = k * k`` taps (a non-square ``taps`` gives ``k * k != taps``)."""
    return int(round(taps**0.5))


def triton_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a Triton backend computes in: ``dtype``, except float32 for half precision under the
    interpreter, which runs on numpy (no bfloat16)."""
    return torch.float32 if (INTERPRET and dtype in _HALF) else dtype


def pad_image(x: torch.Tensor, halo: int, padding: str) -> torch.Tensor:
    """Pad ``x: (B, C, H, W)`` by ``halo`` on every side; reflect falls back to replicate for tiny images."""
    if halo == 0:
        return x
    if padding == "zeros":
        return F.pad(x, (halo, halo, halo, halo))
    if halo < x.shape[-1] and halo < x.shape[-2]:
        return F.pad(x, (halo, halo, halo, halo), mode="reflect")
    # Mirror index by index when the halo is wider than the image (torch refuses that case).
    iy = padded_positions(x.shape[-2], halo, 0, x.shape[-2], "reflect", x.device)
    ix = padded_positions(x.shape[-1], halo, 0, x.shape[-1], "reflect", x.device)
    return x[..., iy, :][..., ix]
