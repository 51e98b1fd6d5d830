"""A tiny pair dataset in the project's format (``degtrans.pairs``), for tests and benchmarks.

It does not replace ``degtrans simulate`` (no ISP, no realistic noise): clean frames are random
shapes and gratings, degraded frames are the same blurred by a PSF field with ``sv_conv2d`` in
linear light, plus light Gaussian noise, both stored through the sRGB curve and cut into patches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from degtrans.atomic import atomic_path
from degtrans.field import PSFField
from degtrans.kernels import sv_conv2d
from degtrans.pairs import encode_u16, file_sha256, rows_to_table, shard_path, shard_schema, write_manifest
from degtrans.simulate.isp import linear_to_srgb, srgb_to_linear


def toy_frame(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: a colour gradient with random rectangles, disks and gratings."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), dtype=np.float32)
    for c in range(3):
        image[..., c] = 0.3 + 0.4 * rng.random() * (yy / height) + 0.3 * rng.random() * (xx / width)
    for _ in range(12):
        colour = rng.random(3).astype(np.float32)
        cy, cx = rng.random(2) * (height, width)
        size = (0.05 + 0.2 * rng.random()) * min(height, width)
        if rng.random() < 0.5:
            inside = (np.abs(yy - cy) < size) & (np.abs(xx - cx) < size * (0.5 + rng.random()))
        else:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < size**2
        image[inside] = colour
    for _ in range(3):
        angle, period = rng.random() * np.pi, 3 + 6 * rng.random()
        cy, cx = rng.random(2) * (height, width)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < (0.15 * min(height, width)) ** 2
        grating = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period)
        image[inside] = grating[inside, None] * rng.random(3).astype(np.float32)
    return np.clip(image, 0.0, 1.0)


def write_toy_dataset(
    out: str | Path,
    field: PSFField,
    *,
    frames: int = 2,
    patches_per_frame: int = 4,
    patch_size: int = 32,
    shards: int = 2,
    noise: float = 0.005,
    seed: int = 0,
) -> Path:
    """Write ``out/`` in the pair-dataset format (manifest, shards, field copy, ``_SUCCESS`` last).

    Args:
        out: output directory (created).
        field: the camera's PSF field; frames have its ``image_size``.
        frames: number of synthetic source frames.
        patches_per_frame: patches cut from each frame at random positions.
        patch_size: P, patch side in pixels.
        shards: Parquet files to spread the rows over.
        noise: standard deviation of the added Gaussian noise (linear light; stored as the
            variance ``noise_read``, with the toy frame's sRGB curve standing in for the ISP).
        seed: all randomness.

    Returns:
        ``out``.
    """
    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    (out / "fields").mkdir(parents=True, exist_ok=True)
    camera = field.camera
    height, width = field.image_size
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    psfs = torch.from_numpy(field.psfs)
    for frame in range(frames):
        clean = toy_frame(height, width, rng)
        # Blur in linear light, as a lens does, then store both through the sRGB curve.
        linear = srgb_to_linear(torch.from_numpy(clean).permute(2, 0, 1)[None])
        blurred = sv_conv2d(linear, psfs)
        blurred = blurred + noise * torch.from_numpy(rng.standard_normal(blurred.shape)).float()
        degraded = linear_to_srgb(blurred)[0].permute(1, 2, 0).numpy()
        for patch in range(patches_per_frame):
            y0 = int(rng.integers(0, height - patch_size + 1))
            x0 = int(rng.integers(0, width - patch_size + 1))
            window = np.s_[y0 : y0 + patch_size, x0 : x0 + patch_size]
            rows.append(
                {
                    "sample_id": f"{camera}/frame{frame:04d}/p{patch:02d}",
                    "camera": camera,
                    "source": f"toy:{seed}:{frame}",
                    "y0": y0,
                    "x0": x0,
                    "frame_h": height,
                    "frame_w": width,
                    "height": patch_size,
                    "width": patch_size,
                    "channels": 3,
                    "clean": encode_u16(clean[window]),
                    "degraded": encode_u16(degraded[window]),
                    "noise_read": float(noise) ** 2,  # a variance, as degtrans simulate stores it
                }
            )
    schema = shard_schema(["noise_read"])
    entries = []
    for index, part in enumerate(np.array_split(np.arange(len(rows)), shards)):
        path = shard_path(out, index)
        with atomic_path(path) as tmp:
            pq.write_table(rows_to_table([rows[i] for i in part], schema), tmp)
        entries.append({"path": f"shards/{path.name}", "rows": len(part), "sha256": file_sha256(path)})
    field_path = field.save(out / "fields" / f"{camera}.npz")
    manifest = {
        "patch_size": patch_size,
        "shards": entries,
        "samples": len(rows),
        "cameras": {
            camera: {
                "field": f"fields/{camera}.npz",
                "sha256": file_sha256(field_path),
                "frame_h": height,
                "frame_w": width,
            }
        },
        "skipped": [],
        "config": {"toy": True, "frames": frames, "noise": noise, "seed": seed},
    }
    write_manifest(out, manifest)
    return out
