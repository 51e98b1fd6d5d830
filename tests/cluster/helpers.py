"""Small pair datasets in the shared contract for the cluster tests (written with the restore toy writer)."""

from __future__ import annotations

from pathlib import Path

from degtrans.config import TrainConfig
from degtrans.testing.synthetic import gaussian_field
from degtrans.testing.toydata import write_toy_dataset


def tiny_dataset(out: Path, *, frames: int = 4, patches_per_frame: int = 8, shards: int = 2) -> Path:
    """A toy dataset of 32x32 patches from 96x128 frames blurred by a 2x3 Gaussian field."""
    field = gaussian_field(grid=(2, 3), psf_size=7, image_size=(96, 128), sigma_centre=0.8, sigma_corner=2.0)
    return write_toy_dataset(out, field, frames=frames, patches_per_frame=patches_per_frame, patch_size=32,
                             shards=shards)  # fmt: skip


def tiny_train_config(**changes) -> TrainConfig:
    """A FOV-KPN small enough that an epoch over a tiny dataset takes a second on one core."""
    values = dict(model="fovkpn", epochs=3, batch_size=4, width=8, offset_channels=8, deform_blocks=1,
                  learning_rate=1e-3, val_fraction=0.45, shuffle_buffer=8, workers=2, amp=False)  # fmt: skip
    values.update(changes)
    return TrainConfig(**values)
