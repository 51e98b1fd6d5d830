"""The PSF field: one PSF per FOV tile and colour channel, the object every stage passes around.

Convention (geometry vs blur): PSFs are stored *centred* — the green channel's centroid at the
kernel centre, each other channel keeping its offset from green (lateral colour). Where the image
of a point lands (distortion, coma's centroid shift) is geometry, kept apart in the optional
``distortion`` map: an object point that an ideal lens images at ``p`` lands at ``p + D(p)``. The
photograph is then ``blur(distort(ideal))``; ``distort`` applies the map, and a simulation that
wants aligned clean/degraded pairs simply skips it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from degtrans.atomic import write_atomic
from degtrans.errors import InputError

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
        distortion: optional (ny, nx, 2) float32 displacement ``(dy, dx)`` in pixels on a grid of
            nodes spanning the frame, node ``(i, j)`` at sensor point ``(i H / (ny - 1), j W / (nx - 1))``
            (interpolated bicubically in between); ``None``: no geometric part.
    """

    psfs: np.ndarray
    image_size: tuple[int, int]
    channels: tuple[str, ...] = ("R", "G", "B")
    domain: str = "linear_rgb"
    meta: dict[str, Any] = field(default_factory=dict)
    distortion: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "psfs", np.ascontiguousarray(self.psfs, dtype=np.float32))
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        object.__setattr__(self, "channels", tuple(self.channels))
        problem = validation_problem(self.psfs, self.image_size, self.channels)
        if problem:
            raise ValueError(f"invalid PSF field: {problem}")
        if self.distortion is not None:
            object.__setattr__(self, "distortion", np.ascontiguousarray(self.distortion, dtype=np.float32))
            problem = distortion_problem(self.distortion)
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

    def displacement(self) -> np.ndarray:
        """(H, W, 2) displacement ``(dy, dx)`` in pixels at every pixel centre (zeros without a map)."""
        height, width = self.image_size
        if self.distortion is None:
            return np.zeros((height, width, 2), np.float32)
        from scipy.interpolate import RectBivariateSpline

        ny, nx = self.distortion.shape[:2]
        node_y = np.linspace(0.0, height, ny)
        node_x = np.linspace(0.0, width, nx)
        ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5
        order_y, order_x = min(3, ny - 1), min(3, nx - 1)
        out = np.empty((height, width, 2), np.float32)
        for axis in range(2):
            spline = RectBivariateSpline(node_y, node_x, self.distortion[..., axis], kx=order_y, ky=order_x)
            out[..., axis] = spline(ys, xs)
        return out

    def distort(self, image: np.ndarray, iterations: int = 4) -> np.ndarray:
        """Apply the distortion map to an ideal image ``(H, W)`` or ``(H, W, C)`` on this frame.

        The output at ``q`` is the input at ``u`` with ``u + D(u) = q`` (fixed-point iterations
        ``u <- q - D(u)``; the map is smooth and small, so a few suffice), sampled bicubically with
        reflected borders. Without a map the image comes back unchanged.
        """
        if tuple(image.shape[:2]) != self.image_size:
            raise ValueError(f"distort: image is {image.shape[:2]}, the field's frame is {self.image_size}")
        if self.distortion is None:
            return image
        import cv2
        from scipy.ndimage import map_coordinates

        displacement = self.displacement()
        height, width = self.image_size
        qy, qx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        qy, qx = qy.astype(np.float32), qx.astype(np.float32)
        uy, ux = qy, qx
        for _ in range(iterations):
            d = cv2.remap(displacement, ux, uy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            uy, ux = qy - d[..., 0], qx - d[..., 1]
        # A cubic B-spline (scipy) rather than cv2.remap: remap quantises coordinates to 1/32 px and
        # its cubic convolution moves a blurred spot's centroid by up to 0.05 px at quarter shifts.
        source = np.asarray(image, dtype=np.float32)
        planes = source[..., None] if source.ndim == 2 else source
        sampled = [map_coordinates(p, [uy, ux], order=3, mode="mirror") for p in np.moveaxis(planes, -1, 0)]
        out = np.stack(sampled, axis=-1).astype(np.float32)
        return out[..., 0] if source.ndim == 2 else out

    def blur(
        self,
        image: np.ndarray,
        *,
        layout: str = "hwc",
        channel: int | None = None,
        padding: str = "reflect",
        backend: str = "auto",
        device: Any = None,
        frame_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """The image as this field blurs it (``sv_conv2d``, the scatter model), on the sensor frame.

        Args:
            image: (H, W, C) (``layout="hwc"``) or (C, H, W) (``"chw"``) linear intensities, the
                field's frame or a frame the field is stretched over; (H, W) with ``channel`` set.
            channel: blur a single plane with this channel's PSFs (the last channel if out of range).
            padding: ``"reflect"`` or ``"zeros"`` (see ``sv_conv2d``).
            backend: the ``sv_conv2d`` backend; ``device``: a torch device for the work (default CPU).
            frame_size: the sensor frame the image sits in at (0, 0); default the image's own size (the
                field stretched over it).

        Returns:
            float32 array of the input's shape and layout.
        """
        import torch

        from degtrans.kernels import sv_conv2d

        psfs = self.psfs
        if channel is not None:
            c = min(channel, psfs.shape[2] - 1)
            psfs = psfs[:, :, c : c + 1]
        x = np.asarray(image, dtype=np.float32)
        planar = x[None] if channel is not None else (x.transpose(2, 0, 1) if layout == "hwc" else x)
        tensor = torch.from_numpy(np.ascontiguousarray(planar))[None]
        kernels = torch.from_numpy(np.ascontiguousarray(psfs, dtype=np.float32))
        if device is not None:
            tensor, kernels = tensor.to(device), kernels.to(device)
        with torch.no_grad():
            out = sv_conv2d(tensor, kernels, padding=padding, backend=backend, frame_size=frame_size)
        out = out[0].cpu().numpy()
        if channel is not None:
            return out[0]
        return out.transpose(1, 2, 0) if layout == "hwc" else out

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically as ``.npz`` with arrays ``psfs`` and ``meta`` (a JSON string)."""
        buffer = io.BytesIO()
        header = {
            "format_version": FORMAT_VERSION,
            "image_size": list(self.image_size),
            "channels": list(self.channels),
            "domain": self.domain,
            "meta": self.meta,
        }
        arrays = {"psfs": self.psfs, "meta": np.array(json.dumps(header, sort_keys=True))}
        if self.distortion is not None:
            arrays["distortion"] = self.distortion
        np.savez(buffer, **arrays)
        return write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> PSFField:
        """Read a field written by :meth:`save`; raises ``InputError`` naming the file and the problem."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = set(data.files)
                missing = {"psfs", "meta"} - keys
                if missing:
                    raise InputError(f"{path}: not a PSF field: missing key(s) {sorted(missing)}")
                psfs = np.array(data["psfs"])
                meta_text = str(data["meta"])
                # Optional (files written before the distortion map have none).
                distortion = np.array(data["distortion"]) if "distortion" in keys else None
        except (OSError, EOFError) as error:
            raise InputError(f"{path}: cannot read PSF field: {error}") from error
        except ValueError as error:
            if str(error).startswith(str(path)):
                raise
            raise InputError(f"{path}: not a PSF field (.npz): {error}") from error
        try:
            header = json.loads(meta_text)
            image_size = tuple(int(v) for v in header["image_size"])
            channels = tuple(str(c) for c in header["channels"])
            domain = str(header["domain"])
            meta = dict(header.get("meta", {}))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise InputError(f"{path}: PSF field has invalid 'meta' JSON: {error}") from error
        if len(image_size) != 2:
            raise InputError(f"{path}: PSF field 'image_size' must be (H, W), got {image_size}")
        try:
            return cls(psfs, image_size, channels, domain, meta, distortion)
        except ValueError as error:  # __post_init__'s "invalid PSF field: ..."
            raise InputError(f"{path}: {error}") from error

    def with_meta(self, **updates: Any) -> PSFField:
        return dataclasses.replace(self, meta={**self.meta, **updates})


def distortion_problem(distortion: np.ndarray) -> str | None:
    """Describe what is wrong with a distortion map, or ``None``."""
    if distortion.ndim != 3 or distortion.shape[-1] != 2 or min(distortion.shape[:2]) < 2:
        return f"'distortion' must be (ny >= 2, nx >= 2, 2), got shape {distortion.shape}"
    if not np.all(np.isfinite(distortion)):
        return "'distortion' contains NaN or infinite values"
    return None


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
