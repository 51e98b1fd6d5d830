"""Image files: every image the project reads or writes passes through here.

In memory an image is ``(H, W, 3)`` float32 RGB in [0, 1]. Encoded images (PNG, JPEG, TIFF, BMP, WebP;
8 or 16 bit; grey or with alpha) have one decoder, :func:`decode_image`. Camera RAW files are found by
suffix (:data:`RAW_SUFFIXES`) and read by a RAW reader the caller chooses: linear light through rawpy
(:func:`read_raw_linear`, what calibration needs) by default; restoration passes the simulation's own
ISP (``degtrans.simulate.camera.develop_raw``). Writes are atomic; every error names the file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from degtrans.atomic import write_atomic
from degtrans.errors import InputError, MissingInput

RAW_SUFFIXES = (".dng", ".nef", ".cr2", ".cr3", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
# Bit depth written per suffix: 16 bit where the format holds it, 8 bit for JPEG and WebP (lossless).
WRITE_BITS = {".png": 16, ".tif": 16, ".tiff": 16, ".jpg": 8, ".jpeg": 8, ".webp": 8}

RawReader = Callable[[Path], np.ndarray]


def is_raw(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a camera RAW file (by its suffix, case-insensitive)."""
    return Path(path).suffix.lower() in RAW_SUFFIXES


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Encoded PNG/JPEG/TIFF/BMP/WebP bytes -> (H, W, 3) float32 RGB in [0, 1].

    Args:
        data: the encoded file (8- or 16-bit, or float TIFF; grey, RGB or RGBA).
        where: the file's name for error messages.

    Raises:
        InputError: naming ``where``, for undecodable data or an unsupported type or channel count.
    """
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise InputError(f"{where}: cannot decode image")
    scale = {np.uint8: 255.0, np.uint16: 65535.0, np.float32: 1.0, np.float64: 1.0}.get(array.dtype.type)
    if scale is None:
        raise InputError(f"{where}: unsupported image type {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    elif array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    else:
        raise InputError(f"{where}: unsupported channel count {array.shape[2]}")
    return np.clip(array.astype(np.float32) / scale, 0.0, 1.0)


def read_raw_linear(path: Path) -> np.ndarray:
    """A RAW file developed by LibRaw in linear light (gamma 1, camera white balance, no auto-brightening).

    Returns:
        (H, W, 3) float32 RGB in [0, 1].
    """
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            rgb = raw.postprocess(gamma=(1, 1), no_auto_bright=True, output_bps=16, use_camera_wb=True)
    except Exception as error:  # rawpy raises its own LibRaw error types
        raise InputError(f"{path}: cannot decode RAW file: {error}") from error
    return (rgb.astype(np.float32) / 65535.0).clip(0.0, 1.0)


def read_image(path: str | os.PathLike, raw_reader: RawReader = read_raw_linear) -> np.ndarray:
    """Read an image file as (H, W, 3) float32 RGB in [0, 1].

    Args:
        path: an encoded image (see :func:`decode_image`) or a camera RAW file (:func:`is_raw`).
        raw_reader: how a RAW file becomes RGB; linear light by default.

    Raises:
        MissingInput: ``path`` is not a file.
        InputError: naming ``path``, if it cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: image not found")
    if is_raw(path):
        return raw_reader(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error}") from error
    return decode_image(data, str(path))


def image_size(source: bytes | str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` from an encoded image's header (file or bytes) without decoding its pixels.

    Raises whatever PIL raises for data it does not recognise.
    """
    from PIL import Image

    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(handle) as image:
        width, height = image.size
    return height, width


def encode_image(image: np.ndarray, suffix: str, where: str = "image") -> bytes:
    """(H, W, 3), (H, W, 1) or (H, W) float in [0, 1] -> the bytes of a ``suffix`` file.

    PNG and TIFF are 16 bit, JPEG and lossless WebP 8 bit (:data:`WRITE_BITS`); values are clipped to
    [0, 1] and rounded.

    Raises:
        InputError: naming ``where``, for an unsupported suffix; ValueError for a wrong shape (a bug).
    """
    import cv2

    suffix = suffix.lower()
    if suffix not in WRITE_BITS:
        raise InputError(f"{where}: unsupported output format {suffix!r} (use .png, .tif, .jpg or .webp)")
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"{where}: expected an (H, W, 3) or (H, W) image, got shape {image.shape}")
    peak, dtype = (65535.0, np.uint16) if WRITE_BITS[suffix] == 16 else (255.0, np.uint8)
    array = np.round(np.clip(image, 0.0, 1.0) * peak).astype(dtype)
    if array.ndim == 3:
        array = np.ascontiguousarray(array[..., ::-1])  # OpenCV stores BGR
    # A WebP quality above 100 is OpenCV's switch to lossless.
    ok, encoded = cv2.imencode(suffix, array, [cv2.IMWRITE_WEBP_QUALITY, 101] if suffix == ".webp" else [])
    if not ok:
        raise ValueError(f"{where}: cannot encode image as {suffix}")
    return encoded.tobytes()


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write (H, W, 3) or (H, W) float in [0, 1] to ``path`` atomically: 16-bit PNG/TIFF, 8-bit JPEG or
    lossless WebP."""
    path = Path(path)
    return write_atomic(path, encode_image(image, path.suffix, str(path)))
