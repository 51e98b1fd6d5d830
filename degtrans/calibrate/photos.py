"""Image files of calibration pairs, and photographs of targets taken by a synthetic hidden camera.

A pair directory holds ``NAME.target.png`` with ``NAME.photo.(png|tif|tiff|dng|nef|cr2|arw|...)``.
Images are float32 ``(H, W, 3)`` RGB in [0, 1] in memory, 16-bit PNG/TIFF on disk (``degtrans.io``;
RAW photographs are read in linear light, its default).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from degtrans.atomic import write_atomic
from degtrans.calibrate.register import Geometry, remap
from degtrans.calibrate.sensor import supersample
from degtrans.calibrate.targets import read_layout, sidecar_path
from degtrans.errors import InputError, MissingInput
from degtrans.field import PSFField
from degtrans.io import RAW_SUFFIXES, read_image, write_image

PHOTO_SUFFIXES = (".png", ".tif", ".tiff", *RAW_SUFFIXES)


def photo_files(directory: Path, name: str) -> list[Path]:
    """The photographs ``NAME.photo.*`` of a known format in ``directory``, sorted."""
    return [p for p in sorted(directory.glob(f"{name}.photo.*")) if p.suffix.lower() in PHOTO_SUFFIXES]


def find_pairs(pairs_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """``(name, target, photo)`` for every ``NAME.target.png`` with a ``NAME.photo.*`` beside it, sorted.

    Raises:
        MissingInput: the directory does not exist.
        InputError: it holds no complete pair (the message lists what was found).
    """
    pairs_dir = Path(pairs_dir)
    if not pairs_dir.is_dir():
        raise MissingInput(f"{pairs_dir}: pairs directory not found")
    pairs = []
    orphans = []
    for target in sorted(pairs_dir.glob("*.target.png")):
        name = target.name[: -len(".target.png")]
        photos = photo_files(pairs_dir, name)
        if photos:
            pairs.append((name, target, photos[0]))
        else:
            orphans.append(target.name)
    if not pairs:
        raise InputError(
            f"{pairs_dir}: no calibration pairs (expected NAME.target.png with NAME.photo.png/tif/dng/...;"
            f" targets without photo: {orphans[:5]})"
        )
    return pairs


@dataclass(frozen=True)
class HiddenCamera:
    """The synthetic camera's hidden parameters besides the PSF field (what stage I must undo).

    Attributes:
        colour_matrix: (3, 3) target RGB → camera RGB.
        offset: (3,) black-level offset in camera RGB.
        gamma: per-channel tone: ``photo = camera ** (1 / gamma)``.
        noise: standard deviation of additive Gaussian noise in linear camera RGB.
        sensor: how the target reaches the sensor: ``"integrate"`` (a physical camera: the target is
            piecewise constant and each pixel averages it over its area, ``supersample`` x
            ``supersample`` samples per pixel) or ``"bicubic"`` (the target resampled bicubically at
            the pixel centres, the fit's model before issue 22).
        supersample: samples per pixel side of ``"integrate"``: after a sharp lens's blur its own error
            is 0.0020 rms at 8 and 0.0010 at 16 (``sensor.supersample``), against noise of 0.003.
    """

    colour_matrix: tuple[tuple[float, float, float], ...] = (
        (0.82, 0.12, 0.02),
        (0.06, 0.86, 0.05),
        (0.02, 0.1, 0.8),
    )
    offset: tuple[float, float, float] = (0.02, 0.02, 0.03)
    gamma: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise: float = 0.005
    sensor: Literal["integrate", "bicubic"] = "integrate"
    supersample: int = 16


def jitter_homography(
    target_size: tuple[int, int], frame_size: tuple[int, int], jitter: float, rng: np.random.Generator
) -> np.ndarray:
    """A target → photo homography: the target fills the frame with a 6 % margin, each corner moved by
    ``N(0, jitter)`` pixels (a small perspective tilt, shift and rotation)."""
    th, tw = target_size
    fh, fw = frame_size
    scale = 1.06 * max(fh / th, fw / tw)
    corners = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], dtype=np.float64)
    mapped = (corners - [tw / 2, th / 2]) * scale + [fw / 2, fh / 2]
    mapped += rng.normal(0.0, jitter, size=mapped.shape)
    return cv2.getPerspectiveTransform(corners.astype(np.float32), mapped.astype(np.float32))  # float64


def photograph(
    target: np.ndarray,
    field: PSFField,
    homography: np.ndarray,
    camera: HiddenCamera,
    rng: np.random.Generator,
    distortion: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """The hidden camera's photograph of ``target``: warp (+ distortion) onto the sensor (integrated over
    each pixel, or bicubic: ``camera.sensor``) → colour matrix → PSF field → noise → tone.

    Args:
        target: (h, w, 3) float32 target in [0, 1].
        field: the PSF field; the photograph has its ``image_size``.
        homography: (3, 3) target pixel → photo pixel.
        distortion: ``k1, k2, p1, p2`` of ``register.Geometry`` (photo → undistorted photo), or ``None``.

    Returns:
        (H, W, 3) float32 photograph in [0, 1].
    """
    geometry = Geometry(
        np.asarray(homography, np.float64), field.image_size, np.asarray(distortion or (0.0,) * 4)
    )
    # The field's own geometric part (``PSFField.distortion``: e.g. coma's centroid shift of a lens
    # whose PSFs are stored centred; nothing without a map) is composed into the sampling coordinates
    # (a smooth map, interpolated exactly enough), so that the target is resampled once, as the fit
    # resamples it: a second bicubic pass would damp the last octave by an amount that varies with
    # the sub-pixel phase of the displacement, which no PSF of the fit's model reproduces.
    coords = field.distort(geometry.target_coords())
    target = np.ascontiguousarray(target, dtype=np.float32)
    if camera.sensor == "integrate":
        warped = supersample(target, coords, camera.supersample)
    else:
        warped = remap(target, coords)
    camera_rgb = warped @ np.asarray(camera.colour_matrix, dtype=np.float32).T + np.asarray(camera.offset)
    blurred = field.blur(camera_rgb)
    if camera.noise > 0:
        blurred = blurred + rng.normal(0.0, camera.noise, size=blurred.shape)
    linear = np.clip(blurred, 0.0, 1.0)
    return (linear ** (1.0 / np.asarray(camera.gamma))).astype(np.float32)


def synthesize_pairs(
    targets: list[Path],
    field: PSFField,
    out_dir: str | Path,
    seed: int = 0,
    noise: float = 0.005,
    homography_jitter: float = 2.0,
    camera: HiddenCamera | None = None,
    distortion: tuple[float, float, float, float] | None = None,
) -> Path:
    """Photograph each target with a hidden camera whose optics are ``field``.

    Writes ``NAME.target.png`` (a copy of the target, with its layout ``NAME.target.json`` when it has
    one) and ``NAME.photo.png`` (16 bit) per target, and ``truth.json`` (geometry per pair and camera
    parameters, for tests and benchmarks). Targets of one pose (their layouts' ``pose``) are
    photographed with one homography, as a rig showing several patterns without moving would.

    Args:
        targets: target image paths.
        field: the hidden camera's PSF field (frame size = ``field.image_size``).
        noise: Gaussian noise sigma in linear camera RGB (overrides ``camera.noise``).
        homography_jitter: sigma in pixels of the random corner displacement.
        distortion: the lens's ``k1, k2, p1, p2`` (``register.Geometry``), the same for every pose.

    Returns:
        ``out_dir``.
    """
    if not targets:
        raise ValueError("synthesize_pairs: no targets given")
    camera = dataclasses.replace(camera or HiddenCamera(), noise=float(noise))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = {
        "camera": field.camera,
        "hidden_camera": camera.__dict__,
        "distortion": list(distortion or (0.0,) * 4),
        "pairs": {},
    }
    poses: dict[int, np.ndarray] = {}
    for index, path in enumerate(targets):
        path = Path(path)
        target = read_image(path)
        layout = read_layout(path)
        pose = layout.pose if layout is not None else 1_000_000 + index
        if pose not in poses:
            poses[pose] = jitter_homography(
                target.shape[:2], field.image_size, homography_jitter, np.random.default_rng([seed, pose, 1])
            )
        homography = poses[pose]
        photo = photograph(
            target, field, homography, camera, np.random.default_rng([seed, index]), distortion
        )
        name = path.name.split(".")[0]
        write_image(out_dir / f"{name}.target.png", target)
        if layout is not None:
            write_atomic(out_dir / f"{name}.target.json", sidecar_path(path).read_text())
        write_image(out_dir / f"{name}.photo.png", photo)
        truth["pairs"][name] = {"homography": homography.tolist(), "pose": int(pose)}
    write_atomic(out_dir / "truth.json", json.dumps(truth, indent=2, default=list))
    return out_dir
