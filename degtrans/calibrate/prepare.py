"""One calibration pair, from its files to a registered pair in linear camera RGB: read and check the
photograph, register its pose (coarse geometry, stage I, fine geometry against the target blurred by
the current PSF estimate), refit the colour through that estimate, and reject what cannot be used."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from degtrans.calibrate.photos import photo_files
from degtrans.calibrate.quality import PhotoRejected, check_clipping, correlation, sharpness
from degtrans.calibrate.register import (
    Geometry,
    RegistrationError,
    Render,
    check_homography,
    coarse_geometry,
    local_device,
    magnification,
    refine,
    tile_shifts,
    tilt_degrees,
    to_gray,
    warp_to_photo,
)
from degtrans.calibrate.targets import Layout, read_layout
from degtrans.calibrate.transfer import (
    SATURATED,
    ToneColour,
    ToneFitError,
    fit_colour_blurred,
    fit_patches,
    fit_tone_colour,
    linearise,
    patch_samples,
    to_camera,
)
from degtrans.config import CalibrateConfig
from degtrans.errors import InputError
from degtrans.field import PSFField
from degtrans.io import read_image


@dataclass(frozen=True, eq=False)
class PreparedPair:
    """A registered pair in linear camera RGB on the photo grid (stage I applied).

    ``target``/``photo``: (H, W, 3) float32; ``mask``: (H, W) bool where the target is valid;
    ``tile_error``: (rows, cols) residual misregistration in pixels (NaN: not measurable);
    ``geometry``: the photo → target map (homography and distortion); ``sharpness``: mid-band contrast
    transfer (``quality.sharpness``).
    """

    name: str
    target: np.ndarray
    photo: np.ndarray
    mask: np.ndarray
    geometry: Geometry
    inliers: int
    ecc: float
    tone: ToneColour
    tile_error: np.ndarray
    sharpness: float = float("nan")
    method: str = "features"


@dataclass(frozen=True)
class Rejected:
    """A pair left out, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class PoseFit:
    """One camera pose: its geometry, stage I, and how the registration went."""

    geometry: Geometry
    tone: ToneColour
    inliers: int
    method: str
    correlation: float


def field_render(field: PSFField | None, channel: int = 1) -> Render | None:
    """Blur one channel as ``field`` does (registration against the blurred target); ``None``: no field."""
    if field is None:
        return None
    # On a GPU when this process sees one (the local runner on a GPU machine; Ray's registration tasks
    # see none): a large frame's blur is most of a registration step on the CPU. The FFT product
    # convolution ("cpu" backend, any device): on a GPU, FFTs are expected to beat the direct Triton
    # kernel at calibration's large k (not measured on a GPU yet).
    device = local_device()

    def render(image: np.ndarray) -> np.ndarray:
        return field.blur(image, channel=channel, backend="cpu", device=device, frame_size=field.image_size)

    return render


def register_pose(
    target: np.ndarray,
    photo: np.ndarray,
    layout: Layout | None,
    config: CalibrateConfig,
    grid: tuple[int, int],
    field: PSFField | None = None,
    linear: bool = False,
) -> PoseFit:
    """Coarse geometry → stage I → fine geometry on linear camera green (the reference channel).

    Stage I needs only the coarse geometry: patch interiors keep a margin of the PSF's reach plus the
    markers' few pixels of error. The fine step then compares the linearised photo with the target in
    camera RGB, blurred by ``field`` when one is given (the true or the current PSF estimate).

    Raises:
        RegistrationError, PhotoRejected, ToneFitError: the pose cannot be used (the message says why).
    """
    geometry, inliers, method = coarse_geometry(target, photo, layout, config.register.min_inliers)
    tilt = tilt_degrees(geometry.homography, target.shape[:2], photo.shape[:2])
    if tilt > config.reject.max_tilt_deg:
        raise PhotoRejected(
            f"steep angle: the chart is tilted about {tilt:.0f} degrees"
            f" (at most {config.reject.max_tilt_deg:g})"
        )
    fit_gamma = config.register.fit_gamma and not linear
    exclude = (photo >= SATURATED).any(axis=-1)
    if layout is not None and layout.patches:
        # The PSF reaches psf_size/2 photo pixels; the markers' geometry is good to a few. In target pixels:
        margin = (config.psf_size // 2 + 4) / magnification(geometry.homography, target.shape[:2])
        tone = fit_patches(patch_samples(photo, geometry, layout, margin), fit_gamma)
    else:
        # No patches: refine on luminance, then the low-pass tone fit (weaker, see ``transfer``).
        geometry, _, _ = refine(
            to_gray(target),
            to_gray(photo),
            geometry,
            sigma=config.register.sigma,
            distortion="none",
            grid=grid,
        )
        warped, mask = warp_to_photo(target, geometry, photo.shape[:2])
        tone = fit_tone_colour(
            warped, photo, mask, sigma=max(6.0, 1.5 * config.psf_size), fit_gamma=fit_gamma
        )
    geometry, corr, _ = refine(
        to_camera(target, tone)[..., 1],
        linearise(photo, tone)[..., 1],
        geometry,
        sigma=config.register.sigma,
        render=field_render(field),
        distortion=config.register.distortion,
        threshold_px=config.register.distortion_threshold_px,
        grid=grid,
        exclude=exclude,
    )
    check_homography(geometry.homography, target.shape[:2], photo.shape[:2])
    return PoseFit(geometry, tone, inliers, method, corr)


def refit_colour(
    warped: np.ndarray,
    linear_photo: np.ndarray,
    mask: np.ndarray,
    field: PSFField,
    tone: ToneColour,
    psf_size: int,
) -> ToneColour:
    """Stage I again through the current PSF estimate (``transfer.fit_colour_blurred``): each target
    channel blurred by each channel's PSFs, fitted on the pixels whose PSF footprint is valid."""
    blurred = np.empty((*warped.shape[:2], 3, 3), np.float32)
    for j in range(3):
        planes = np.repeat(warped[..., j : j + 1], 3, axis=-1)
        blurred[..., j] = field.blur(planes, backend="cpu", device=local_device())
    inside = cv2.erode(mask.astype(np.uint8), np.ones((psf_size, psf_size), np.uint8), borderValue=0) > 0
    return fit_colour_blurred(blurred, linear_photo, inside, tone)


def _pose_reference(target_path: Path, name: str) -> tuple[Path, Path]:
    """The pair ``name`` beside ``target_path`` (the chart that registers this pattern's pose)."""
    target = target_path.parent / f"{name}.target.png"
    photos = photo_files(target_path.parent, name)
    if not target.is_file() or not photos:
        raise PhotoRejected(
            f"the pose's chart {name!r} (geometry_from) has no target/photo pair beside {target_path}"
        )
    return target, photos[0]


def prepare_pair(
    name: str,
    target_path: Path,
    photo_path: Path,
    config: CalibrateConfig,
    grid: tuple[int, int],
    field: PSFField | None = None,
) -> PreparedPair | Rejected:
    """Read, check, register and linearise one pair; an unusable pair (an unreadable image or layout too)
    comes back ``Rejected`` with why.

    A pattern whose layout names ``geometry_from`` takes the geometry and stage I of that chart's photo
    (same pose); it is still checked on its own (clipping, focus, that it shows this target).

    Args:
        field: a PSF field to blur the target with during fine registration (the current estimate, or
            the truth in tests); ``None`` relies on the low-pass alone.
    """
    try:
        target = read_image(target_path)
        photo = read_image(photo_path)
        layout = read_layout(target_path)
        check_clipping(photo, config.reject.max_clipped)
        pose_target, pose_photo, pose_layout, pose_path = target, photo, layout, Path(photo_path)
        if layout is not None and layout.geometry_from:
            ref_target, pose_path = _pose_reference(Path(target_path), layout.geometry_from)
            pose_photo = read_image(pose_path)
            if pose_photo.shape != photo.shape:
                raise PhotoRejected(
                    f"photo is {photo.shape[:2]}, its pose's chart photo is {pose_photo.shape[:2]}"
                )
            pose_target, pose_layout = read_image(ref_target), read_layout(ref_target)
        linear = pose_path.suffix.lower() not in (".png", ".tif", ".tiff")  # RAW: read in linear light
        pose = register_pose(pose_target, pose_photo, pose_layout, config, grid, field, linear)
        warped, mask = warp_to_photo(target, pose.geometry, photo.shape[:2], config.register.target_model)
        tone = pose.tone
        if field is not None and config.register.refit_colour:
            tone = refit_colour(warped, linearise(photo, tone), mask, field, tone, config.psf_size)
        camera_target, linear_photo = to_camera(warped, tone), linearise(photo, tone)
        match = correlation(camera_target[..., 1], linear_photo[..., 1], mask, config.register.sigma)
        if match < config.reject.min_correlation:
            raise PhotoRejected(
                f"wrong target: the registered target and photo correlate at {match:.2f}"
                f" (at least {config.reject.min_correlation:g})"
            )
        sharp = sharpness(camera_target[..., 1], linear_photo[..., 1], mask)
        if sharp < config.reject.min_sharpness:
            raise PhotoRejected(
                f"out of focus: mid-band contrast transfer {sharp:.3f}"
                f" (at least {config.reject.min_sharpness:g})"
            )
    except (InputError, RegistrationError, PhotoRejected, ToneFitError) as error:
        return Rejected(name, str(error))
    shifts = tile_shifts(
        to_camera(target, tone)[..., 1],
        linear_photo[..., 1],
        pose.geometry,
        grid,
        sigma=config.register.sigma,
        render=field_render(field),
    )
    return PreparedPair(
        name=name,
        target=camera_target,
        photo=linear_photo,
        mask=mask,
        geometry=pose.geometry,
        inliers=pose.inliers,
        ecc=pose.correlation,
        tone=tone,
        tile_error=np.hypot(shifts[..., 0], shifts[..., 1]),
        sharpness=sharp,
        method=pose.method,
    )
