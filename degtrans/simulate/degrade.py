"""One aligned training pair: the clean image and the same scene through the camera's optics and noise.

Both images pass through the same chain (unprocess, CFA mosaic, demosaic, process) with the same
sampled parameters; only the degraded one is blurred by the PSF field (in linear camera RGB, before
the CFA) and gets sensor noise. With an identity field and no noise the pair is identical.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from degtrans.field import PSFField
from degtrans.kernels import sv_conv2d
from degtrans.simulate.camera import CameraProfile
from degtrans.simulate.cfa import demosaic, mosaic
from degtrans.simulate.isp import DEFAULT_RANGES, ISPParams, ISPRanges, process, sample_isp_params, unprocess
from degtrans.simulate.noise import NoiseModel, NoiseParams, add_noise, sample_noise_params

# Context the demosaicking filters need on each side of a patch (Malvar's 5x5 reaches 2 pixels).
DEMOSAIC_HALO = 2


@dataclass(frozen=True)
class DegradeParams:
    """Everything random about one pair: ISP draw and noise levels."""

    isp: ISPParams
    noise: NoiseParams

    def columns(self, index: int = 0) -> dict[str, float]:
        return {**self.isp.columns(index), **self.noise.columns(index)}


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


def blur(
    linear: torch.Tensor,
    field: PSFField,
    offset: tuple[int, int] = (0, 0),
    frame_size: tuple[int, int] | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Apply ``field`` to ``linear (B, 3, h, w)`` cut at ``offset`` from a frame of ``frame_size``.

    The PSFs are those of the crop's true sensor position; borders of the crop are mirrored, which
    is exact where the crop touches the frame border. Elsewhere give the crop ``k // 2`` pixels of
    context and discard them afterwards (``degrade`` does).
    """
    psfs = torch.as_tensor(field.psfs, dtype=linear.dtype, device=linear.device)
    frame = tuple(frame_size) if frame_size is not None else field.image_size
    return sv_conv2d(linear, psfs, offset=tuple(offset), frame_size=frame, padding="reflect", backend=backend)


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
    *,
    offset: tuple[int, int] = (0, 0),
    frame_size: tuple[int, int] | None = None,
    crop: tuple[int, int, int, int] | None = None,
    cfa_pattern: str | None = None,
    demosaic_method: str = "malvar",
    noise: bool = True,
    clean_cfa: bool = False,
    backend: str = "auto",
) -> Pair:
    """Like :func:`degrade`, also returning the noisy Bayer mosaic."""
    if clean_srgb.dim() != 4 or clean_srgb.shape[1] != 3:
        raise ValueError(f"degrade: clean_srgb must be (B, 3, H, W), got {tuple(clean_srgb.shape)}")
    if clean_srgb.shape[0] != params.isp.batch:
        raise ValueError(f"degrade: {clean_srgb.shape[0]} images but parameters for {params.isp.batch}")
    pattern = cfa_pattern or camera.cfa_pattern
    frame = tuple(frame_size) if frame_size is not None else field.image_size
    top, left, height, width = crop if crop is not None else (0, 0, *clean_srgb.shape[-2:])
    linear = unprocess(clean_srgb, params.isp)
    blurred = blur(linear, field, offset, frame, backend)
    raw = mosaic(blurred, pattern, offset)
    if noise:
        raw = add_noise(raw, params.noise, generator)
    window = (..., slice(top, top + height), slice(left, left + width))
    # process() is per pixel: crop first, it only needs the context that demosaicking used.
    if clean_cfa:
        raw_clean = mosaic(linear, pattern, offset)
        both = demosaic(torch.cat([raw, raw_clean]), pattern, offset, demosaic_method)[window]
        out = process(both, _repeat(params.isp, 2))
        batch = clean_srgb.shape[0]
        degraded, clean = out[:batch], out[batch:]
    else:
        degraded = process(demosaic(raw, pattern, offset, demosaic_method)[window], params.isp)
        clean = process(linear[window], params.isp)
    return Pair(degraded=degraded, clean=clean, raw=raw[window])


def _repeat(isp: ISPParams, times: int) -> ISPParams:
    return ISPParams(
        *(
            t.repeat(times, *([1] * (t.dim() - 1)))
            for t in (isp.rgb2cam, isp.rgb_gain, isp.red_gain, isp.blue_gain)
        )
    )


def degrade(
    clean_srgb: torch.Tensor,
    field: PSFField,
    camera: CameraProfile,
    params: DegradeParams,
    generator: torch.Generator,
    *,
    offset: tuple[int, int] = (0, 0),
    frame_size: tuple[int, int] | None = None,
    crop: tuple[int, int, int, int] | None = None,
    cfa_pattern: str | None = None,
    demosaic_method: str = "malvar",
    noise: bool = True,
    clean_cfa: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate the camera on a clean image: returns the aligned ``(degraded, clean)`` pair.

    Args:
        clean_srgb: (B, 3, H, W) processed sRGB-like clean image in [0, 1], a crop of the sensor frame.
        field: the camera's PSF field (linear camera RGB).
        camera: profile (CFA, colour matrix, noise calibration).
        params: sampled with :func:`sample_params`; the same for both images of the pair.
        generator: the sample's random stream (noise draws).
        offset: (y0, x0) of ``clean_srgb``'s top-left pixel on the sensor.
        frame_size: (H, W) of the sensor frame; defaults to the field's ``image_size``.
        crop: (top, left, h, w) inside ``clean_srgb`` to return; ``clean_srgb`` should extend
            ``k // 2 + 2`` pixels beyond it where the frame allows (see :func:`context_window`).
        cfa_pattern: Bayer pattern at the sensor origin; defaults to the camera's.
        demosaic_method: ``"malvar"`` or ``"bilinear"``.
        noise: add sensor noise (False: optics only).
        clean_cfa: the clean image also passes the CFA and demosaicking (the pair then differs
            only by optics and noise, but the label carries demosaicking artefacts that a network
            learns to reproduce); False (the default, as ``simulate.clean_cfa``): an artefact-free label.

    Returns:
        ``(degraded, clean)``, each (B, 3, h, w) in [0, 1], processed identically.
    """
    pair = simulate_pair(
        clean_srgb,
        field,
        camera,
        params,
        generator,
        offset=offset,
        frame_size=frame_size,
        crop=crop,
        cfa_pattern=cfa_pattern,
        demosaic_method=demosaic_method,
        noise=noise,
        clean_cfa=clean_cfa,
        backend=backend,
    )
    return pair.degraded, pair.clean
