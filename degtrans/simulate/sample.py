"""One sample of the dataset: its draws (position, parameters, then noise) and its row.

Both synthesis paths use these: the one-sample path (:func:`simulate_sample`) and the device path that
develops a row group at once (``batch.simulate_batch``); a sample's draws depend only on ``(seed,
sample_id)``, its frame size and its camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from degtrans.field import PSFField
from degtrans.simulate.camera import CameraProfile
from degtrans.simulate.cfa import phase_pattern
from degtrans.simulate.degrade import (
    DegradeParams,
    Pair,
    PairSettings,
    context_window,
    sample_generator,
    sample_params,
    simulate_pair,
)
from degtrans.simulate.isp import ISPRanges


@dataclass(frozen=True)
class EncodedPair:
    """A developed pair quantised as the dataset stores it, on the device it was developed on: ``clean``,
    ``degraded`` (B, H*W*3) and ``raw`` (B, H*W) or ``None``, uint16 values held as int32."""

    clean: torch.Tensor
    degraded: torch.Tensor
    raw: torch.Tensor | None

    @classmethod
    def of(cls, pair: Pair, cameras: list[CameraProfile] | None) -> EncodedPair:
        """Quantise in double precision (the rule of ``degtrans.pairs.encode_u16``); ``cameras`` (one per
        image) give the raw mosaic's black and white levels, ``None`` leaves it out."""

        def u16(images: torch.Tensor) -> torch.Tensor:
            hwc = images.detach().permute(0, 2, 3, 1).double().clamp(0.0, 1.0) * 65535.0
            return hwc.round().to(torch.int32).flatten(1)

        raw = None
        if cameras is not None:
            black = torch.tensor([float(np.mean(c.black_level)) for c in cameras], dtype=torch.float64)
            white = torch.tensor([float(c.white_level) for c in cameras], dtype=torch.float64)
            black, white = black.to(pair.raw.device)[:, None], white.to(pair.raw.device)[:, None]
            dn = black + pair.raw.detach().double().flatten(1) * (white - black)
            raw = dn.round().clamp(0, 65535).to(torch.int32)
        return cls(u16(pair.clean), u16(pair.degraded), raw)

    def to_host(self) -> EncodedPair:
        """The same as numpy-ready CPU tensors (waits for the device)."""
        return EncodedPair(
            *(None if t is None else t.to("cpu") for t in (self.clean, self.degraded, self.raw))
        )


@dataclass(frozen=True)
class SampleDraws:
    """A sample's draws from its own generator, in order: position, then parameters. The generator
    continues with the noise (one standard normal per pixel of the context ``window``)."""

    generator: torch.Generator
    y0: int
    x0: int
    params: DegradeParams
    window: tuple[int, int, int, int]


def draw_sample(
    frame: tuple[int, int], kernel_size: int, camera: CameraProfile, sample_id: str, settings: PairSettings
) -> SampleDraws:
    """The draws of one sample: depend only on ``(seed, sample_id)``, the frame size and the camera."""
    patch = settings.patch_size
    height, width = frame
    generator = sample_generator(settings.seed, sample_id)
    y0 = int(torch.randint(0, height - patch + 1, (1,), generator=generator))
    x0 = int(torch.randint(0, width - patch + 1, (1,), generator=generator))
    params = sample_params(generator, camera, ISPRanges(), settings.noise_model(camera))
    window = context_window(y0, x0, (patch, patch), frame, kernel_size)
    return SampleDraws(generator, y0, x0, params, window)


def simulate_sample(
    image: np.ndarray,
    psf_field: PSFField,
    camera: CameraProfile,
    sample_id: str,
    settings: PairSettings,
    camera_name: str,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """One row of the dataset from its clean frame; depends only on ``(seed, sample_id)`` and inputs.

    The one-sample path (the CPU baseline). The random draws stay on the CPU generator wherever the
    patch is developed; ``degtrans.simulate.batch`` develops whole row groups on a device instead.
    """
    frame = image.shape[:2]
    draws = draw_sample(frame, psf_field.kernel_size, camera, sample_id, settings)
    top, bottom, left, right = draws.window
    crop = torch.from_numpy(np.ascontiguousarray(image[top:bottom, left:right])).permute(2, 0, 1)[None]
    patch = settings.patch_size
    pair = simulate_pair(
        crop.to(device), psf_field, camera, draws.params, draws.generator, settings, offset=(top, left),
        frame_size=frame, crop=(draws.y0 - top, draws.x0 - left, patch, patch),
    )  # fmt: skip
    encoded = EncodedPair.of(pair, [camera] if settings.store_raw else None).to_host()
    return sample_row(sample_id, camera_name, camera, draws, frame, settings, encoded)


def sample_row(
    sample_id: str,
    camera_name: str,
    camera: CameraProfile,
    draws: SampleDraws,
    frame: tuple[int, int],
    settings: PairSettings,
    pair: EncodedPair,
    index: int = 0,
) -> dict[str, Any]:
    """The dataset row of image ``index`` of an encoded ``pair`` on the CPU (:meth:`EncodedPair.to_host`)."""
    patch = settings.patch_size
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
        "clean": pair.clean[index].numpy().astype(np.uint16),
        "degraded": pair.degraded[index].numpy().astype(np.uint16),
        **draws.params.columns(),
    }
    if settings.store_raw:
        row["raw"] = pair.raw[index].numpy().astype(np.uint16)
        row["raw_pattern"] = phase_pattern(settings.pattern(camera), (draws.y0, draws.x0))
        row["raw_black_level"] = float(np.mean(camera.black_level))
        row["raw_white_level"] = float(camera.white_level)
    return row
