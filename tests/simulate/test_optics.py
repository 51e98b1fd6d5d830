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


def _centroids(psfs: np.ndarray) -> np.ndarray:
    k = psfs.shape[-1]
    coords = np.arange(k) - k // 2
    total = psfs.sum(axis=(-1, -2))
    return np.stack([(psfs.sum(-1) * coords).sum(-1) / total, (psfs.sum(-2) * coords).sum(-1) / total], -1)


def test_triplet_psfs_are_centred_and_the_geometry_is_in_the_map():
    grid, k, size = (3, 3), 31, (240, 320)
    centred = lens_field(grid, k, size, "triplet")
    raw = lens_field(grid, k, size, "triplet", centred=False)
    assert raw.distortion is None and centred.distortion is not None
    green = _centroids(centred.psfs)[:, :, 1]
    assert np.abs(green).max() < 0.01
    # Lateral colour stays in the PSFs as each channel's offset from green, growing toward the corner.
    offsets = _centroids(centred.psfs) - _centroids(centred.psfs)[:, :, 1:2]
    assert np.linalg.norm(offsets[0, 0, 0]) > 0.4 and np.linalg.norm(offsets[1, 1, 0]) < 1e-6
    # The map holds what was taken out of the PSFs: coma's centroid shift (the uncentred PSFs' green
    # centroid) plus the lens's distortion, at every tile centre.
    spec = PRESETS["triplet"]
    displacement = centred.displacement()
    half_diagonal = np.hypot(size[0] / 2, size[1] / 2)
    for r in range(3):
        for c in range(3):
            y, x = centred.tile_centre(r, c)
            radius = np.hypot(y - size[0] / 2, x - size[1] / 2)
            cubic = spec.distortion_px * (radius / half_diagonal) ** 3
            unit = np.array([y - size[0] / 2, x - size[1] / 2]) / max(radius, 1e-9)
            expected = _centroids(raw.psfs)[r, c, 1] + cubic * unit
            np.testing.assert_allclose(displacement[int(y), int(x)], expected, atol=0.12)
    radius = second_moment_radius(centred.psfs)
    assert 3.0 < radius.min() and radius.max() < 7.0
    assert _asymmetry(centred.psfs[0, 0, 1]) > 5 * _asymmetry(centred.psfs[1, 1, 1])
