"""One aligned training pair: the clean image and the same scene through the camera's optics and noise.

Both images pass through the same chain (unprocess, CFA mosaic, demosaic, process) with the same
sampled parameters; only the degraded one is blurred by the PSF field (in linear camera RGB, before
the CFA) and gets sensor noise. With an identity field and no noise the pair is identical.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from degtrans.config import SimulateConfig
from degtrans.field import PSFField
from degtrans.kernels import sv_conv2d
from degtrans.kernels.sv_conv.placement import PairArg
from degtrans.pairs import PARAM_COLUMNS
from degtrans.simulate.camera import CameraProfile
from degtrans.simulate.cfa import cfa_masks, demosaic_masked, mosaic_masked
from degtrans.simulate.isp import DEFAULT_RANGES, ISPParams, ISPRanges, process, sample_isp_params, unprocess
from degtrans.simulate.noise import (
    NoiseModel,
    NoiseParams,
    add_standard_noise,
    sample_noise_params,
    standard_noise,
)

# Context the demosaicking filters need on each side of a patch (Malvar's 5x5 reaches 2 pixels).
DEMOSAIC_HALO = 2


@dataclass(frozen=True)
class PairSettings:
    """The ``[simulate]`` choices a pair's pixels and row depend on (``SimulateConfig`` documents each).

    Frozen and picklable: a shard's plan carries it to the worker that writes the shard.
    """

    patch_size: int
    seed: int
    cfa_pattern: str
    demosaic: Literal["bilinear", "malvar"]
    noise: bool
    clean_cfa: bool
    log_shot_noise_min: float
    log_shot_noise_max: float
    store_raw: bool

    @classmethod
    def of(cls, config: SimulateConfig) -> PairSettings:
        """The fields of the ``[simulate]`` section that a pair depends on."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})

    def pattern(self, camera: CameraProfile) -> str:
        """The Bayer pattern at the sensor origin: the camera's (``"camera"``), or the one forced."""
        return camera.cfa_pattern if self.cfa_pattern == "camera" else self.cfa_pattern

    def noise_model(self, camera: CameraProfile) -> NoiseModel:
        """The camera's read-noise calibration with the settings' shot-noise range."""
        return NoiseModel(
            shot_min=10.0**self.log_shot_noise_min, shot_max=10.0**self.log_shot_noise_max,
            read_slope=camera.noise.read_slope, read_intercept=camera.noise.read_intercept,
            read_sigma=camera.noise.read_sigma,
        )  # fmt: skip


DEFAULT_SETTINGS = PairSettings.of(SimulateConfig())


@dataclass(frozen=True)
class DegradeParams:
    """Everything random about one pair: ISP draw and noise levels."""

    isp: ISPParams
    noise: NoiseParams

    def columns(self, index: int = 0) -> dict[str, float]:
        """The ``degtrans.pairs.PARAM_COLUMNS`` of sample ``index`` (the dataset's row format)."""
        noise = (float(self.noise.shot[index]), float(self.noise.read[index]))
        return dict(zip(PARAM_COLUMNS, [*self.isp.vector()[index].tolist(), *noise], strict=True))


@dataclass(frozen=True)
class Pair:
    """A simulated pair; ``raw`` is the noisy Bayer mosaic ``(B, 1, h, w)`` in linear [0, 1] units."""

    degraded: torch.Tensor
    clean: torch.Tensor
    raw: torch.Tensor


def sample_generator(seed: int, sample_id: str) -> torch.Generator:
    """The one random stream of a sample: depends only on ``(seed, sample_id)``."""
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def sample_params(
    generator: torch.Generator,
    camera: CameraProfile,
    ranges: ISPRanges = DEFAULT_RANGES,
    noise: NoiseModel | None = None,
    batch: int = 1,
) -> DegradeParams:
    """Draw the ISP and noise parameters of ``batch`` pairs for ``camera`` (noise model: the camera's)."""
    isp = sample_isp_params(generator, ranges, camera, batch)
    return DegradeParams(isp=isp, noise=sample_noise_params(generator, noise or camera.noise, batch))


def context_window(
    y0: int, x0: int, patch: tuple[int, int], frame: tuple[int, int], kernel_size: int
) -> tuple[int, int, int, int]:
    """Rows ``[top, bottom)`` and columns ``[left, right)`` to cut so the patch at (y0, x0) is exact."""
    m = kernel_size // 2 + DEMOSAIC_HALO
    return max(0, y0 - m), min(frame[0], y0 + patch[0] + m), max(0, x0 - m), min(frame[1], x0 + patch[1] + m)


def simulate_pair(
    clean_srgb: torch.Tensor,
    field: PSFField,
    camera: CameraProfile,
    params: DegradeParams,
    generator: torch.Generator,
    settings: PairSettings = DEFAULT_SETTINGS,
    *,
    offset: tuple[int, int] = (0, 0),
    frame_size: tuple[int, int] | None = None,
    crop: tuple[int, int, int, int] | None = None,
) -> Pair:
    """Simulate the camera on a clean image: the aligned pair, and the noisy Bayer mosaic.

    Args:
        clean_srgb: (B, 3, H, W) processed sRGB-like clean image in [0, 1], a crop of the sensor frame.
        field: the camera's PSF field (linear camera RGB).
        camera: profile (CFA, colour matrix, noise calibration).
        params: sampled with :func:`sample_params`; the same for both images of the pair.
        generator: the sample's random stream (noise draws).
        settings: the chain's choices: ``cfa_pattern`` (``"camera"``: the camera's), ``demosaic``
            (``"malvar"`` or ``"bilinear"``), ``noise`` (False: optics only) and ``clean_cfa`` (the clean
            image also passes the CFA and demosaicking: the pair then differs only by optics and noise,
            but the label carries demosaicking artefacts that a network learns to reproduce; False, the
            default: an artefact-free label).
        offset: (y0, x0) of ``clean_srgb``'s top-left pixel on the sensor.
        frame_size: (H, W) of the sensor frame; defaults to the field's ``image_size``.
        crop: (top, left, h, w) inside ``clean_srgb`` to return; ``clean_srgb`` should extend
            ``k // 2 + 2`` pixels beyond it where the frame allows (see :func:`context_window`).

    Returns:
        The pair: ``degraded`` and ``clean`` (B, 3, h, w) in [0, 1], processed identically, and the noisy
        Bayer mosaic ``raw`` (B, 1, h, w).
    """
    if clean_srgb.dim() != 4 or clean_srgb.shape[1] != 3:
        raise ValueError(f"degrade: clean_srgb must be (B, 3, H, W), got {tuple(clean_srgb.shape)}")
    if clean_srgb.shape[0] != params.isp.batch:
        raise ValueError(f"degrade: {clean_srgb.shape[0]} images but parameters for {params.isp.batch}")
    frame = tuple(frame_size) if frame_size is not None else field.image_size
    top, left, height, width = crop if crop is not None else (0, 0, *clean_srgb.shape[-2:])
    batch, _, full_h, full_w = clean_srgb.shape
    masks = cfa_masks(settings.pattern(camera), full_h, full_w, offset, clean_srgb.device)
    # The sample's next draws after its parameters: one standard normal per raw pixel.
    z = standard_noise((batch, 1, full_h, full_w), generator, clean_srgb.dtype) if settings.noise else None
    psfs = torch.as_tensor(field.psfs, dtype=clean_srgb.dtype, device=clean_srgb.device)
    return develop_pair(
        clean_srgb, psfs, masks, params, z, offset=offset, frame_size=frame, crop_at=(top, left),
        crop_size=(height, width), settings=settings,
    )  # fmt: skip


def develop_pair(
    clean_srgb: torch.Tensor,
    field_psfs: torch.Tensor,
    masks: torch.Tensor,
    params: DegradeParams,
    noise_z: torch.Tensor | None,
    *,
    offset: PairArg,
    frame_size: PairArg,
    crop_at: PairArg,
    crop_size: tuple[int, int],
    field_index: torch.Tensor | None = None,
    settings: PairSettings = DEFAULT_SETTINGS,
) -> Pair:
    """The camera chain on a batch whose draws are made: unprocess, blur, CFA, noise, demosaic, process.

    Every geometry argument is one value for the batch or one per image (a (B, 2) tensor), so a batch of
    patches from different frames, positions and cameras runs in one pass (the device path of
    ``degtrans.simulate.batch``); :func:`simulate_pair` is the one-geometry case.

    Args:
        clean_srgb: (B, 3, H, W) sRGB-like clean crops in [0, 1].
        field_psfs: (rows, cols, 3, k, k) PSF field, or (F, rows, cols, 3, k, k) with ``field_index``.
        masks: CFA masks, (3, H, W) or (B, 3, H, W) (``cfa_masks`` / ``cfa_masks_batch``).
        params: B parameter sets.
        noise_z: (B, 1, H, W) standard normal draws, or ``None`` for no noise.
        offset, frame_size: the crops' sensor positions and frame sizes (see ``sv_conv2d``).
        crop_at: (top, left) of the returned window inside the crops, or (B, 2).
        crop_size: (h, w) of the returned window.
        field_index: (B,) field of each crop in a stacked ``field_psfs``.
        settings: its ``demosaic`` and ``clean_cfa`` (the noise is ``noise_z``).

    Returns:
        The pair, each image (B, 3, h, w) (``raw``: (B, 1, h, w)).
    """
    linear = unprocess(clean_srgb, params.isp)
    blurred = sv_conv2d(linear, field_psfs, offset=offset, frame_size=frame_size, field_index=field_index)
    raw = mosaic_masked(blurred, masks)
    if noise_z is not None:
        raw = add_standard_noise(raw, params.noise, noise_z)
    # process() is per pixel: crop first, it only needs the context that demosaicking used.
    if settings.clean_cfa:
        both_masks = torch.cat([masks, masks]) if masks.dim() == 4 else masks
        both = demosaic_masked(torch.cat([raw, mosaic_masked(linear, masks)]), both_masks, settings.demosaic)
        twice = torch.cat([crop_at, crop_at]) if torch.is_tensor(crop_at) and crop_at.dim() == 2 else crop_at
        both = crop_windows(both, twice, crop_size)
        out = process(both, ISPParams.from_vector(params.isp.vector().repeat(2, 1)))
        batch = clean_srgb.shape[0]
        degraded, clean = out[:batch], out[batch:]
    else:
        degraded = process(
            crop_windows(demosaic_masked(raw, masks, settings.demosaic), crop_at, crop_size), params.isp
        )
        clean = process(crop_windows(linear, crop_at, crop_size), params.isp)
    return Pair(degraded=degraded, clean=clean, raw=crop_windows(raw, crop_at, crop_size))


def crop_windows(images: torch.Tensor, at: PairArg, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) windows of ``images (B, C, H, W)`` at ``at``: one (top, left) or a (B, 2) tensor."""
    height, width = size
    if not (torch.is_tensor(at) and at.dim() == 2):
        top, left = (int(v) for v in at)
        return images[..., top : top + height, left : left + width]
    at = at.to(images.device)
    rows = (at[:, 0, None] + torch.arange(height, device=images.device))[:, :, None]
    cols = (at[:, 1, None] + torch.arange(width, device=images.device))[:, None, :]
    batch = torch.arange(images.shape[0], device=images.device)[:, None, None]
    return images[batch, :, rows, cols].permute(0, 3, 1, 2)  # advanced indices first: (B, h, w, C)


def stack_params(params: Sequence[DegradeParams]) -> DegradeParams:
    """One :class:`DegradeParams` of the samples' parameter sets, in order."""

    def cat(parts: list) -> Any:
        kind = type(parts[0])
        return kind(*(torch.cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(kind)))

    return DegradeParams(isp=cat([p.isp for p in params]), noise=cat([p.noise for p in params]))


def degrade(
    clean_srgb: torch.Tensor,
    field: PSFField,
    camera: CameraProfile,
    params: DegradeParams,
    generator: torch.Generator,
    settings: PairSettings = DEFAULT_SETTINGS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The aligned ``(degraded, clean)`` pair of :func:`simulate_pair` for whole frames."""
    pair = simulate_pair(clean_srgb, field, camera, params, generator, settings)
    return pair.degraded, pair.clean
