"""The target on the sensor: the area mean of a piecewise-constant target over each pixel's footprint
(``area_sample``, exact for axis-aligned footprints) and the synthetic camera's supersampled rendering,
which approaches it."""

import numpy as np
import pytest

from degtrans.calibrate.register import Geometry
from degtrans.calibrate.sensor import area_sample, supersample
from degtrans.calibrate.targets import make_target


def _scaled_coords(shape: tuple[int, int], scale: float, offset: float) -> np.ndarray:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return np.stack([scale * xs + offset, scale * ys + offset], axis=-1)


def test_area_sample_is_the_exact_box_mean_of_the_cells():
    rng = np.random.default_rng(0)
    target = rng.random((31, 40)).astype(np.float32)
    # Footprints of 1.5 target pixels whose edges fall on half cells: each is a 3x3 block of half cells.
    coords = _scaled_coords((18, 24), 1.5, 1.25)
    halves = np.repeat(np.repeat(target, 2, axis=0), 2, axis=1)
    expected = halves[2 : 2 + 54, 2 : 2 + 72].reshape(18, 3, 24, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(area_sample(target, coords), expected, atol=1e-5)


def test_a_flat_target_stays_flat_and_channels_are_kept():
    coords = _scaled_coords((12, 16), 1.3, 3.0)
    flat = np.full((40, 50, 3), [0.2, 0.5, 0.7], np.float32)
    np.testing.assert_allclose(
        area_sample(flat, coords), np.broadcast_to([0.2, 0.5, 0.7], (12, 16, 3)), atol=1e-5
    )
    np.testing.assert_allclose(
        supersample(flat, coords, 4), np.broadcast_to([0.2, 0.5, 0.7], (12, 16, 3)), atol=1e-6
    )
    with pytest.raises(ValueError, match="factor"):
        supersample(flat, coords, 0)


def test_supersampling_approaches_the_area_mean_on_a_tilted_chart():
    target = make_target("calib", (144, 192), seed=3)[0][..., 1].copy()
    angle = np.radians(0.7)
    c, s = np.cos(angle) / 1.5, np.sin(angle) / 1.5
    homography = np.array([[c, -s, 64 - c * 96 + s * 72], [s, c, 48 - s * 96 - c * 72], [0, 0, 1.0]])
    coords = Geometry(homography, (96, 128)).target_coords()
    inside = np.zeros((96, 128), bool)
    inside[8:-8, 8:-8] = True
    exact = area_sample(target, coords)
    errors = [np.sqrt(((supersample(target, coords, f) - exact)[inside] ** 2).mean()) for f in (4, 16)]
    assert errors[1] < 0.5 * errors[0] and errors[1] < 0.01, errors
