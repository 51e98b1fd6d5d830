"""The PSF field: one PSF per FOV tile and colour channel, the object every stage passes around."""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from degtrans.atomic import write_atomic

FORMAT_VERSION = 1
SUM_TOLERANCE = 1e-4


@dataclass(frozen=True, eq=False)
class PSFField:
    """A camera's spatially variant PSF field.

    Attributes:
        psfs: (rows, cols, C, k, k) float32, k odd, each PSF non-negative and summing to 1.
            PSF ``(r, c)`` describes the centre of tile ``(r, c)`` of a ``rows x cols`` grid of equal tiles.
        image_size: (H, W) in pixels of the frame the field was calibrated for.
        channels: channel order, e.g. ``("R", "G", "B")``.
        domain: the domain the PSFs act in (``"linear_rgb"`` of the camera).
        meta: free metadata (camera name, source, diagnostics); must be JSON-serialisable.
    """

    psfs: np.ndarray
    image_size: tuple[int, int]
    channels: tuple[str, ...] = ("R", "G", "B")
    domain: str = "linear_rgb"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "psfs", np.ascontiguousarray(self.psfs, dtype=np.float32))
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        object.__setattr__(self, "channels", tuple(self.channels))
        problem = validation_problem(self.psfs, self.image_size, self.channels)
        if problem:
            raise ValueError(f"invalid PSF field: {problem}")

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the tile grid."""
        return int(self.psfs.shape[0]), int(self.psfs.shape[1])

    @property
    def kernel_size(self) -> int:
        return int(self.psfs.shape[-1])

    @property
    def camera(self) -> str:
        return str(self.meta.get("camera", "unknown"))

    def tile_centre(self, row: int, col: int) -> tuple[float, float]:
        """Sensor coordinates (y, x) in pixels of tile ``(row, col)``'s centre (pixel i spans [i, i+1))."""
        rows, cols = self.grid
        return (row + 0.5) * self.image_size[0] / rows, (col + 0.5) * self.image_size[1] / cols

    def at(self, y: float, x: float) -> np.ndarray:
        """PSF (C, k, k) at the continuous sensor point (y, x) in pixels, bilinear between tile
        centres and clamped at the borders. Pixel ``(i, j)`` sits at ``(i + 0.5, j + 0.5)``: that is
        where ``sv_conv2d`` evaluates it, and ``at(*tile_centre(r, c))`` is tile ``(r, c)``'s PSF."""
        rows, cols = self.grid
        ty = float(np.clip(y * rows / self.image_size[0] - 0.5, 0.0, rows - 1))
        tx = float(np.clip(x * cols / self.image_size[1] - 0.5, 0.0, cols - 1))
        r0, c0 = min(int(np.floor(ty)), max(rows - 2, 0)), min(int(np.floor(tx)), max(cols - 2, 0))
        fy, fx = ty - r0, tx - c0
        r1, c1 = min(r0 + 1, rows - 1), min(c0 + 1, cols - 1)
        p = self.psfs.astype(np.float64)
        top = (1 - fx) * p[r0, c0] + fx * p[r0, c1]
        bottom = (1 - fx) * p[r1, c0] + fx * p[r1, c1]
        return ((1 - fy) * top + fy * bottom).astype(np.float32)

    def meta_json(self) -> str:
        return json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "image_size": list(self.image_size),
                "channels": list(self.channels),
                "domain": self.domain,
                "meta": self.meta,
            },
            sort_keys=True,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically as ``.npz`` with arrays ``psfs`` and ``meta`` (a JSON string)."""
        buffer = io.BytesIO()
        np.savez(buffer, psfs=self.psfs, meta=np.array(self.meta_json()))
        return write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> PSFField:
        """Read a field written by :meth:`save`; raises ``ValueError`` naming the file and the problem."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = set(data.files)
                missing = {"psfs", "meta"} - keys
                if missing:
                    raise ValueError(f"{path}: not a PSF field: missing key(s) {sorted(missing)}")
                psfs = np.array(data["psfs"])
                meta_text = str(data["meta"])
        except (OSError, EOFError) as error:
            raise ValueError(f"{path}: cannot read PSF field: {error}") from error
        except ValueError as error:
            if str(error).startswith(str(path)):
                raise
            raise ValueError(f"{path}: not a PSF field (.npz): {error}") from error
        try:
            header = json.loads(meta_text)
            image_size = tuple(int(v) for v in header["image_size"])
            channels = tuple(str(c) for c in header["channels"])
            domain = str(header["domain"])
            meta = dict(header.get("meta", {}))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: PSF field has invalid 'meta' JSON: {error}") from error
        if len(image_size) != 2:
            raise ValueError(f"{path}: PSF field 'image_size' must be (H, W), got {image_size}")
        problem = validation_problem(psfs, image_size, channels)
        if problem:
            raise ValueError(f"{path}: invalid PSF field: {problem}")
        return cls(psfs=psfs, image_size=image_size, channels=channels, domain=domain, meta=meta)

    def with_meta(self, **updates: Any) -> PSFField:
        return PSFField(self.psfs, self.image_size, self.channels, self.domain, {**self.meta, **updates})


def validation_problem(
    psfs: np.ndarray, image_size: tuple[int, int], channels: tuple[str, ...]
) -> str | None:
    """Describe what is wrong with a PSF array, or ``None`` if it is a valid field."""
    if psfs.ndim != 5:
        return f"'psfs' must have rank 5 (rows, cols, C, k, k), got shape {psfs.shape}"
    rows, cols, n_channels, k, k2 = psfs.shape
    if k != k2:
        return f"PSFs must be square, got {k}x{k2}"
    if k % 2 == 0:
        return f"PSF size k must be odd, got k={k}"
    if min(rows, cols, n_channels) < 1:
        return f"empty grid or channels in shape {psfs.shape}"
    if n_channels != len(channels):
        return f"{n_channels} PSF channels but channel order {list(channels)}"
    if min(image_size) < 1:
        return f"image_size must be positive, got {image_size}"
    if not np.all(np.isfinite(psfs)):
        return "PSFs contain NaN or infinite values"
    if float(psfs.min()) < -SUM_TOLERANCE:
        return f"PSFs must be non-negative (min {float(psfs.min()):.3g})"
    sums = psfs.astype(np.float64).sum(axis=(-1, -2))
    worst = float(np.abs(sums - 1.0).max())
    if worst > SUM_TOLERANCE:
        r, c, ch = np.unravel_index(int(np.abs(sums - 1.0).argmax()), sums.shape)
        return f"PSFs must sum to 1 (tile ({r}, {c}) channel {ch} sums to {sums[r, c, ch]:.6f})"
    return None


def normalise_psfs(psfs: np.ndarray) -> np.ndarray:
    """Clip negatives and scale each PSF of ``(..., k, k)`` to sum to 1."""
    psfs = np.clip(np.asarray(psfs, dtype=np.float64), 0.0, None)
    return (psfs / psfs.sum(axis=(-1, -2), keepdims=True)).astype(np.float32)
