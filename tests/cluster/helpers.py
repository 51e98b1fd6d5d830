"""Small pair datasets in the shared contract for the cluster tests (written with the restore toy writer)."""

from __future__ import annotations

from pathlib import Path

from degtrans.config import FOVKPNConfig, OptimConfig, TrainConfig, WorkersConfig
from degtrans.testing.synthetic import gaussian_field
from degtrans.testing.toydata import write_toy_dataset


def tiny_dataset(out: Path, *, frames: int = 4, patches_per_frame: int = 8, shards: int = 2) -> Path:
    """A toy dataset of 32x32 patches from 96x128 frames blurred by a 2x3 Gaussian field."""
    field = gaussian_field(grid=(2, 3), psf_size=7, image_size=(96, 128), sigma_centre=0.8, sigma_corner=2.0)
    return write_toy_dataset(out, field, frames=frames, patches_per_frame=patches_per_frame, patch_size=32,
                             shards=shards)  # fmt: skip


def tiny_train_config(**changes) -> TrainConfig:
    """A FOV-KPN small enough that an epoch over a tiny dataset takes a second on one core."""
    values = dict(model="fovkpn", epochs=3, batch_size=4, width=8, val_fraction=0.6, shuffle_buffer=8,
                  amp=False, fovkpn=FOVKPNConfig(offset_channels=8, deform_blocks=1),
                  optim=OptimConfig(learning_rate=1e-3), ray=WorkersConfig(workers=2))  # fmt: skip
    values.update(changes)
    return TrainConfig(**values)


SYNTH_FRAME = (40, 48)


def synthesis_inputs(root: Path, images: int = 3) -> tuple[Path, list[Path]]:
    """``images`` random 40x48 PNGs in ``root/images`` and two Gaussian lens fields (camA, camB)."""
    import cv2
    import numpy as np

    from degtrans.testing.synthetic import gaussian_field

    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(images):
        image = cv2.resize(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8), SYNTH_FRAME[::-1])
        cv2.imwrite(str(root / "images" / f"img{i:04d}.png"), image)
    fields = [
        gaussian_field((2, 2), 5, SYNTH_FRAME).save(root / "camA.npz"),
        gaussian_field((2, 3), 7, SYNTH_FRAME, sigma_centre=1.5).save(root / "camB.npz"),
    ]
    return root / "images", fields


def dataset_rows(output: Path):
    """The manifest and every row of a finished pair dataset, sorted by ``sample_id``."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = json.loads((output / "manifest.json").read_text())
    table = pa.concat_tables([pq.read_table(output / s["path"]) for s in manifest["shards"]])
    return manifest, table.sort_by("sample_id")
