"""Virtual lenses: Airy pattern on axis, aberrations growing toward the corners."""

import numpy as np
import pytest
from scipy.special import j1

from degtrans.calibrate.inspect import second_moment_radius
from degtrans.simulate.optics import PRESETS, LensSpec, lens_field, oversampled_psf, random_lens


def _airy(spec: LensSpec, kernel_size: int, s: int, channel: int) -> np.ndarray:
    n = kernel_size * s
    r_um = np.hypot(
        *np.meshgrid(*(2 * [(np.arange(n) - (n - 1) / 2) * spec.pixel_pitch_um / s]), indexing="ij")
    )
    v = np.pi * r_um / (spec.wavelengths_nm[channel] * 1e-3 * spec.f_number)
    with np.errstate(invalid="ignore", divide="ignore"):
        airy = np.where(v > 0, (2 * j1(v) / v) ** 2, 1.0)
    return airy / airy.sum()


@pytest.mark.parametrize("f_number", [2.0, 4.0])
def test_aberration_free_on_axis_psf_is_airy(f_number):
    spec = LensSpec("test", f_number=f_number, pixel_pitch_um=1.0)
    for channel in range(3):
        psf, s = oversampled_psf(spec, 15, 0.0, 0.0, channel)
        airy = _airy(spec, 15, s, channel)
        # Residual: the pupil is a disc of whole samples and the FFT wraps the Airy tails.
        assert np.abs(psf - airy).max() < 0.03 * airy.max()
        first_zero = 1.22 * spec.wavelengths_nm[channel] * 1e-3 * f_number
        centre = (psf.shape[0] - 1) // 2
        profile = psf[centre, centre:]
        dip = np.argmin(profile[: int(1.5 * first_zero * s / spec.pixel_pitch_um)]) * spec.pixel_pitch_um / s
        assert abs(dip - first_zero) < 1.5 * spec.pixel_pitch_um / s


def test_ideal_field_is_uniform():
    field = lens_field(grid=(3, 3), psf_size=15, image_size=(96, 96), preset="ideal")
    assert np.allclose(field.psfs, field.psfs[1:2, 1:2], atol=1e-6)


def _asymmetry(psf: np.ndarray) -> float:
    return float(np.abs(psf - psf[::-1, ::-1]).sum())


@pytest.mark.parametrize("preset", ["phone-wide", "dslr-kit"])
def test_psfs_widen_and_turn_asymmetric_toward_corners(preset):
    field = lens_field(grid=(5, 5), psf_size=21, image_size=(200, 300), preset=preset)
    green = field.psfs[:, :, 1]
    widths = second_moment_radius(field.psfs)
    width = widths.mean(axis=-1) if widths.ndim == 3 else widths
    assert width[0, 0] > width[2, 2] and width[4, 4] > width[2, 2]
    assert green[0, 0].max() < green[2, 2].max()
    assert _asymmetry(green[0, 0]) > 5 * _asymmetry(green[2, 2])
    # Point symmetry of the lens: opposite corners are rotated copies of each other.
    assert np.allclose(green[0, 0], green[4, 4][::-1, ::-1], atol=1e-5)


def test_lateral_colour_separates_channels_in_the_corner():
    field = lens_field(grid=(3, 3), psf_size=21, image_size=(120, 120), preset="dslr-kit")
    k = np.arange(21) - 10
    centroid = lambda p: np.array([(p.sum(1) * k).sum(), (p.sum(0) * k).sum()])  # noqa: E731
    corner = [centroid(field.psfs[2, 2, c]) for c in range(3)]
    centre = [centroid(field.psfs[1, 1, c]) for c in range(3)]
    assert np.linalg.norm(corner[0] - corner[2]) > 0.5
    assert np.linalg.norm(centre[0] - centre[2]) < 1e-6


def test_random_family_is_seedable_and_meta_recorded():
    assert random_lens(3) == random_lens(3) and random_lens(3) != random_lens(4)
    field = lens_field(grid=(2, 2), psf_size=11, image_size=(64, 64), preset="random-3", profile="nikon-d700")
    assert field.meta["lens"]["f_number"] == random_lens(3).f_number
    assert field.meta["profile"] == "nikon-d700"
    with pytest.raises(ValueError, match="unknown lens preset"):
        lens_field(preset="fisheye")
    assert {"phone-wide", "ideal"} <= set(PRESETS)
