"""The focus check: ``quality.sharpness`` is the lens's contrast transfer at ~0.1 cycles/px, whatever the
target, and the default ``min_sharpness`` passes a blurry lens in focus yet rejects a sharp one out of
focus."""

import numpy as np
import pytest
from scipy.signal import fftconvolve

from degtrans.calibrate.photos import HiddenCamera, jitter_homography, photograph
from degtrans.calibrate.quality import SHARPNESS_BAND, sharpness
from degtrans.calibrate.register import Geometry
from degtrans.calibrate.sensor import area_sample
from degtrans.calibrate.targets import make_target
from degtrans.config import RejectConfig
from degtrans.field import PSFField
from degtrans.simulate.optics import lens_field

FRAME = (192, 256)
LINEAR = HiddenCamera(((1, 0, 0), (0, 1, 0), (0, 0, 1)), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 0.003)


def _sharpness(field: PSFField, kind: str) -> float:
    """Sharpness of green in a photo of a ``kind`` target, against the target warped by the true geometry."""
    target = make_target(kind, FRAME, seed=3)[0]
    homography = jitter_homography(FRAME, FRAME, 2.0, np.random.default_rng(0))
    photo = photograph(target, field, homography, LINEAR, np.random.default_rng(1))
    # The target on the sensor as the pipeline models it (``target_model = "area"``).
    model = area_sample(target, Geometry(homography, FRAME).target_coords())
    mask = np.zeros(FRAME, bool)
    mask[16:-16, 16:-16] = True
    return sharpness(model[..., 1], photo[..., 1], mask)


def _uniform(psf: np.ndarray) -> PSFField:
    """One (k, k) PSF for every channel of a 1x1 field."""
    return PSFField(np.repeat(psf[None, None, None], 3, axis=2).astype(np.float32), FRAME)


def _disc(radius: float) -> np.ndarray:
    half = int(np.ceil(radius))
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    disc = (np.hypot(y, x) <= radius).astype(np.float64)
    return disc / disc.sum()


def test_sharpness_is_the_mtf_at_the_band_for_any_target():
    sigma = 1.5
    y, x = np.mgrid[-7:8, -7:8]
    field = _uniform(np.exp(-(x**2 + y**2) / (2 * sigma**2)) / (2 * np.pi * sigma**2))
    f = np.linspace(*SHARPNESS_BAND, 9)
    expected = np.mean(np.exp(-2 * np.pi**2 * sigma**2 * f**2))
    for kind in ("calib", "noise"):
        # A chart's marker edges and a noise pattern see the same lens.
        assert abs(_sharpness(field, kind) - expected) < 0.03, kind


@pytest.fixture(scope="module")
def triplet():
    return lens_field((2, 3), 31, FRAME, "triplet")


def test_default_threshold_passes_a_blurry_lens_and_rejects_defocus(triplet):
    threshold = RejectConfig().min_sharpness
    # The triplet lens in focus (second-moment radius 3-7 px): 0.37-0.41.
    in_focus = PSFField(triplet.psfs, FRAME)
    assert _sharpness(in_focus, "noise") > 1.3 * threshold
    # A sharp phone lens behind a 5-px defocus disc: 0.13-0.17.
    phone = lens_field((1, 1), 15, FRAME, "phone-wide").psfs[0, 0, 1].astype(np.float64)
    defocused = fftconvolve(phone, _disc(5.0), mode="full")
    assert _sharpness(_uniform(defocused / defocused.sum()), "noise") < threshold / 1.3


@pytest.mark.parametrize("lens", ["phone-wide", "triplet"])
def test_focus_ratio_rejects_a_3px_defocus_and_keeps_2px(lens):
    """Relative to the run's in-focus photos: a 3-px defocus disc falls below ``focus_ratio``, a 2-px one
    stays above it (a blurry lens and a sharp one alike)."""
    ratio = RejectConfig().focus_ratio
    psf = lens_field((1, 1), 15, FRAME, lens).psfs[0, 0, 1].astype(np.float64)

    def behind(radius: float) -> float:
        blurred = psf if radius == 0 else fftconvolve(psf, _disc(radius), mode="full")
        return _sharpness(_uniform(blurred / blurred.sum()), "noise")

    in_focus = behind(0)
    assert behind(3.0) < 0.95 * ratio * in_focus
    assert behind(2.0) > 1.05 * ratio * in_focus
