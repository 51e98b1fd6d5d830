"""Full-resolution restoration of photographs by overlapping tiles with smooth blending.

Each tile is restored with its true field coordinates (and, for non-blind models, the PSFs at its
corners), optionally averaged with its mirror images (``restore.self_ensemble``); tiles are
blended with a separable ramp window normalised by the accumulated weights, so an identity restorer
reproduces the input exactly and no seams show. At most ``max_tiles_in_memory`` tiles are in flight
at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from degtrans.config import RestoreConfig
from degtrans.errors import InputError, MissingInput
from degtrans.field import PSFField
from degtrans.io import read_image, write_image
from degtrans.restore.baselines import SensorNoise, baseline_settings, deconvolve_field
from degtrans.restore.checkpoint import model_from_checkpoint
from degtrans.restore.coords import fov_coords
from degtrans.restore.data import patch_corner_psfs
from degtrans.restore.pretrained import load_pretrained
from degtrans.simulate.camera import develop_raw
from degtrans.simulate.isp import ISPParams

# Where the corners (top-left, top-right, bottom-left, bottom-right) of patch_corner_psfs go when the
# tile is flipped along these dims.
FLIPPED_CORNERS = {(-1,): [1, 0, 3, 2], (-2,): [2, 3, 0, 1], (-2, -1): [3, 2, 1, 0]}

Method = Literal["model", "identity", "wiener", "rl"]
TileFn = Callable[[torch.Tensor, list[tuple[int, int]]], torch.Tensor]
DEFAULT_CONFIG = RestoreConfig()


def read_photo(path: str | Path) -> np.ndarray:
    """A photograph to restore as (H, W, 3) float32 RGB in [0, 1]: encoded images with the project's
    decoder; camera RAW developed by the simulation's ISP (``develop_raw``), the processing the networks
    were trained on (calibration, by contrast, reads RAW in linear light)."""
    return read_image(path, raw_reader=develop_raw)


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of ``tile``-pixel tiles covering ``[0, length)``, neighbours sharing >= ``overlap < tile``
    pixels."""
    return [0] if tile >= length else [*range(0, length - tile, tile - overlap), length - tile]


def ramp_window(length: int, overlap: int) -> np.ndarray:
    """(length,) positive blending weights rising linearly over ``overlap`` pixels at both ends."""
    i = np.arange(length, dtype=np.float64) + 0.5
    ramp = max(overlap, 1)
    return np.minimum(1.0, np.minimum(i, length - i) / ramp)


def restore_tiled(
    image: np.ndarray,
    fn: TileFn,
    tile: int = 256,
    overlap: int = 32,
    max_tiles: int = 8,
    progress: bool = True,
) -> np.ndarray:
    """Apply ``fn`` to overlapping tiles of ``image`` and blend them.

    Args:
        image: (H, W, C) float32.
        fn: ``fn(tiles (B, C, th, tw) float32, origins [(y0, x0)] * B) -> (B, C, th, tw)``.
        tile: tile side (clipped to the image size); overlap: pixels shared by neighbours.
        max_tiles: tiles restored (and held) at once.

    Returns:
        (H, W, C) float32, ``sum(w * fn(tile)) / sum(w)`` per pixel.
    """
    height, width, channels = image.shape
    th, tw = min(tile, height), min(tile, width)
    ov_y, ov_x = min(overlap, th - 1), min(overlap, tw - 1)
    origins = [(y, x) for y in tile_origins(height, th, ov_y) for x in tile_origins(width, tw, ov_x)]
    window = np.outer(ramp_window(th, ov_y), ramp_window(tw, ov_x))
    accumulated = np.zeros((height, width, channels), dtype=np.float64)
    weights = np.zeros((height, width, 1), dtype=np.float64)
    for start in tqdm(range(0, len(origins), max_tiles), desc="restore", unit="batch", disable=not progress):
        chunk = origins[start : start + max_tiles]
        tiles = np.stack([image[y : y + th, x : x + tw] for y, x in chunk]).transpose(0, 3, 1, 2)
        restored = fn(torch.from_numpy(tiles).float().contiguous(), chunk).detach().float().cpu()
        for (y, x), result in zip(chunk, restored.permute(0, 2, 3, 1).numpy(), strict=True):
            accumulated[y : y + th, x : x + tw] += window[..., None] * result
            weights[y : y + th, x : x + tw] += window[..., None]
    return (accumulated / weights).astype(np.float32)


def flip_ensemble(
    model: torch.nn.Module,
    tiles: torch.Tensor,
    coords: torch.Tensor,
    psf: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    isp: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean of ``model`` over the tiles and their three mirror images, each flipped back.

    A mirror image is restored as the tile at the mirrored sensor position (coordinates reflected
    through the frame centre) under the mirrored PSFs (each flipped, the corners swapped). For the
    PSFs that is exact; for the coordinates it assumes a lens mirror-symmetric about the frame's
    centre lines, as a centred lens is. Four forward passes.

    Args:
        tiles: (B, C, H, W); coords: (B, 3, H, W) ``(x, y, r)``; psf: (B, C, k, k) or (B, 4, C, k, k)
            (corners); noise, isp: per tile, as the model takes them.

    Returns:
        (B, C, H, W).
    """
    total = model(tiles, coords, psf, noise, isp)
    for dims, corners in FLIPPED_CORNERS.items():
        sign = [-1.0 if -1 in dims else 1.0, -1.0 if -2 in dims else 1.0, 1.0]  # x, y reflect; r stays
        mirrored = (
            coords.flip(dims) * torch.tensor(sign, dtype=coords.dtype, device=coords.device)[:, None, None]
        )
        corner_psfs = psf is not None and psf.dim() == 5 and psf.shape[1] == 4
        flipped_psf = None if psf is None else (psf[:, corners] if corner_psfs else psf).flip(dims)
        total = total + model(tiles.flip(dims), mirrored, flipped_psf, noise, isp).flip(dims)
    return total / (1 + len(FLIPPED_CORNERS))


def model_tile_fn(
    model: torch.nn.Module,
    frame_size: tuple[int, int],
    field: PSFField | None,
    device: torch.device,
    noise: torch.Tensor | None = None,
    isp: torch.Tensor | None = None,
    self_ensemble: bool = False,
) -> TileFn:
    """A :data:`TileFn` running a restoration network with each tile's field coordinates (and PSFs).

    Args:
        noise: (2,) ``(shot, read)`` of the frame, when known (simulated frames); isp: (12,) its ISP
            draw (``degtrans.pairs.ISP_COLUMNS``). Both are given to every tile.
        self_ensemble: restore every tile with :func:`flip_ensemble` (4x the time).
    """
    run = flip_ensemble if self_ensemble else (lambda m, *inputs: m(*inputs))

    @torch.no_grad()
    def fn(tiles: torch.Tensor, origins: list[tuple[int, int]]) -> torch.Tensor:
        size = tiles.shape[-2:]
        y0, x0 = torch.tensor(origins).unbind(1)
        coords = fov_coords(y0, x0, frame_size[0], frame_size[1], size[0], size[1], device=device)
        psf = None
        if getattr(model, "needs_psf", False):
            # The PSFs at the tile's corners describe the field across it (as in training).
            corners = [patch_corner_psfs(field, y, x, tuple(size)) for y, x in origins]
            psf = torch.from_numpy(np.stack(corners)).to(device)

        def per_tile(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else value.float().to(device).expand(len(origins), -1)

        return run(model, tiles.to(device), coords, psf, per_tile(noise), per_tile(isp)).clamp(0.0, 1.0)

    return fn


def restore_array(
    image: np.ndarray,
    *,
    method: Method = "model",
    model: torch.nn.Module | None = None,
    field: PSFField | None = None,
    config: RestoreConfig = DEFAULT_CONFIG,
    device: torch.device | str | None = None,
    progress: bool = True,
    noise: SensorNoise | None = None,
    isp: ISPParams | None = None,
) -> np.ndarray:
    """Restore a whole frame ``image: (H, W, 3)`` in [0, 1] with ``method``; returns the same shape.

    ``noise`` and ``isp``, the frame's sensor noise and ISP draw, are known for simulated frames; a
    photograph has neither: the sRGB curve is undone and the noise estimated per tile.
    """
    height, width = image.shape[:2]
    if not 0 <= config.overlap < config.tile_size:
        raise InputError(
            f"restore.overlap ({config.overlap}) must be in [0, restore.tile_size={config.tile_size})"
        )
    if method in ("wiener", "rl"):
        if field is None:
            raise InputError(f"method {method!r} needs a PSF field (--field camera.npz)")
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        out = deconvolve_field(tensor, field, method, noise=noise, isp=isp, **baseline_settings(config))
        return out.permute(1, 2, 0).numpy()
    if method == "identity":
        fn: TileFn = lambda tiles, origins: tiles  # noqa: E731
    elif method == "model":
        if model is None:
            raise InputError("method 'model' needs a checkpoint (--checkpoint RUN/best.pt)")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = model.to(device).eval()
        known = (
            None if noise is None else torch.tensor([noise.shot, noise.read]),
            None if isp is None else isp.vector()[0].float(),
        )
        fn = model_tile_fn(model, (height, width), field, device, *known, self_ensemble=config.self_ensemble)
    else:
        raise InputError(f"--method must be one of model, identity, wiener, rl; got {method!r}")
    return restore_tiled(image, fn, config.tile_size, config.overlap, config.max_tiles_in_memory, progress)


def restore_image(
    photo: str | Path,
    output: str | Path,
    checkpoint: str | Path | None = None,
    field: PSFField | str | Path | None = None,
    method: Method | None = None,
    config: RestoreConfig = DEFAULT_CONFIG,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> Path:
    """Restore the photograph ``photo`` and write ``output`` (PNG/TIFF 16-bit, JPEG 8-bit).

    Args:
        checkpoint: a ``degtrans train`` checkpoint (``method="model"``, the default when given).
            Without one, ``method="model"`` with a ``field`` uses the bundled pretrained deep Wiener
            (:mod:`degtrans.restore.pretrained`), which serves any calibrated lens.
        field: the camera's PSF field (.npz or ``PSFField``) for its frame size; needed by the deep
            Wiener model and the ``wiener``/``rl`` baselines.
        method: ``"model"`` (the default with a checkpoint or a field), ``"identity"``, ``"wiener"``
            or ``"rl"``.

    Raises:
        InputError naming the file for an unreadable photo, checkpoint or field, a field for another
        frame size, or a non-blind checkpoint without a field.
    """
    image = read_photo(photo)
    loaded = field if field is None or isinstance(field, PSFField) else PSFField.load(field)
    if loaded is not None and tuple(loaded.image_size) != image.shape[:2]:
        name = field if not isinstance(field, PSFField) else f"PSF field of camera {loaded.camera!r}"
        raise InputError(
            f"{name}: PSF field is for a {loaded.image_size[0]}x{loaded.image_size[1]} frame, "
            f"the photo is {image.shape[0]}x{image.shape[1]}"
        )
    method = method or ("model" if checkpoint is not None or loaded is not None else "identity")
    model = None
    if method == "model":
        if checkpoint is None:
            if loaded is None:
                raise InputError("method 'model' needs --checkpoint, or --field for the bundled deep Wiener")
            try:
                model, train_config = load_pretrained()
            except FileNotFoundError as error:
                hint = "give --checkpoint RUN/best.pt, or --method wiener"
                raise MissingInput(f"{error}; {hint}") from error
        else:
            model, train_config = model_from_checkpoint(checkpoint)
        if getattr(model, "needs_psf", False) and loaded is None:
            raise InputError(
                f"{checkpoint}: a {train_config.model!r} checkpoint needs the camera's PSF field (--field)"
            )
    restored = restore_array(image, method=method, model=model, field=loaded, config=config, device=device,
                             progress=progress)  # fmt: skip
    return write_image(output, restored)
