"""One sample of the dataset: its draws (position, parameters, then noise) and its row.

Both synthesis paths use these: the one-sample path (``shards.simulate_sample``) and the device path that
develops a row group at once (``batch.simulate_batch``); a sample's draws depend only on ``(seed,
sample_id)``, its frame size and its camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from degtrans.pairs import encode_u16
from degtrans.simulate.camera import CameraProfile
from degtrans.simulate.degrade import DegradeParams, Pair, context_window, sample_generator, sample_params
from degtrans.simulate.isp import ISPRanges
from degtrans.simulate.noise import NoiseModel


def _hwc(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor -> (H, W, C) float64 array: pixels are quantised to uint16 from double precision."""
    return image.detach().permute(1, 2, 0).double().cpu().numpy()


@dataclass(frozen=True)
class SampleDraws:
    """A sample's draws from its own generator, in order: position, then parameters. The generator
    continues with the noise (one standard normal per pixel of the context ``window``)."""

    generator: torch.Generator
    y0: int
    x0: int
    params: DegradeParams
    window: tuple[int, int, int, int]

    @property
    def window_shape(self) -> tuple[int, int]:
        top, bottom, left, right = self.window
        return bottom - top, right - left


def draw_sample(
    frame: tuple[int, int], kernel_size: int, camera: CameraProfile, sample_id: str, settings: dict[str, Any]
) -> SampleDraws:
    """The draws of one sample: depend only on ``(seed, sample_id)``, the frame size and the camera."""
    patch = settings["patch_size"]
    height, width = frame
    generator = sample_generator(settings["seed"], sample_id)
    y0 = int(torch.randint(0, height - patch + 1, (1,), generator=generator))
    x0 = int(torch.randint(0, width - patch + 1, (1,), generator=generator))
    noise_model = NoiseModel(
        shot_min=10.0 ** settings["log_shot_noise_min"],
        shot_max=10.0 ** settings["log_shot_noise_max"],
        read_slope=camera.noise.read_slope,
        read_intercept=camera.noise.read_intercept,
        read_sigma=camera.noise.read_sigma,
    )
    params = sample_params(generator, camera, ISPRanges(), noise_model)
    window = context_window(y0, x0, (patch, patch), frame, kernel_size)
    return SampleDraws(generator, y0, x0, params, window)


def cfa_pattern_of(camera: CameraProfile, settings: dict[str, Any]) -> str:
    """The Bayer pattern at the sensor origin: the camera's, or the one the settings force."""
    return camera.cfa_pattern if settings["cfa_pattern"] == "camera" else settings["cfa_pattern"]


def sample_row(
    sample_id: str,
    camera_name: str,
    camera: CameraProfile,
    draws: SampleDraws,
    frame: tuple[int, int],
    settings: dict[str, Any],
    pair: Pair,
    index: int = 0,
) -> dict[str, Any]:
    """The dataset row of image ``index`` of a developed ``pair`` (tensors on any device)."""
    patch = settings["patch_size"]
    row: dict[str, Any] = {
        "sample_id": sample_id,
        "camera": camera_name,
        "y0": draws.y0,
        "x0": draws.x0,
        "frame_h": frame[0],
        "frame_w": frame[1],
        "height": patch,
        "width": patch,
        "channels": 3,
        "clean": encode_u16(_hwc(pair.clean[index])),
        "degraded": encode_u16(_hwc(pair.degraded[index])),
        **draws.params.columns(),
    }
    if settings["store_raw"]:
        from degtrans.simulate.cfa import phase_pattern

        black = float(np.mean(camera.black_level))
        dn = black + pair.raw[index, 0].detach().double().cpu().numpy() * (camera.white_level - black)
        row["raw"] = np.clip(np.rint(dn), 0, 65535).astype(np.uint16).ravel()
        row["raw_pattern"] = phase_pattern(cfa_pattern_of(camera, settings), (draws.y0, draws.x0))
        row["raw_black_level"] = black
        row["raw_white_level"] = float(camera.white_level)
    return row
