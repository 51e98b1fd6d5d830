"""Registration recovers a known homography to < 0.1 px and rejects pairs that cannot be registered."""

import numpy as np
import pytest

from degtrans.calibrate.photos import HiddenCamera, jitter_homography, photograph
from degtrans.calibrate.register import (
    Geometry,
    RegistrationError,
    check_homography,
    register,
    warp_to_photo,
)
from degtrans.calibrate.targets import make_target
from degtrans.testing.synthetic import gaussian_field


def _corner_error(estimated: np.ndarray, truth: np.ndarray, size: tuple[int, int]) -> float:
    h, w = size
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1], [w / 2, h / 2, 1]], dtype=np.float64).T
    a = estimated @ corners
    b = truth @ corners
    return float(np.abs(a[:2] / a[2] - b[:2] / b[2]).max())


@pytest.fixture(scope="module")
def pair():
    target, _ = make_target("noise", (192, 192), seed=3)
    field = gaussian_field((3, 3), 9, (192, 192), sigma_centre=0.8, sigma_corner=1.4)
    rng = np.random.default_rng(0)
    homography = jitter_homography((192, 192), (192, 192), 2.0, rng)
    photo = photograph(target, field, homography, HiddenCamera(noise=0.003), rng)
    return target, photo, homography


def test_recovers_known_homography_subpixel(pair):
    target, photo, truth = pair
    registration = register(target, photo, min_inliers=20)
    assert registration.inliers >= 20
    assert _corner_error(registration.homography, truth, target.shape[:2]) < 0.1


def test_warp_mask_marks_covered_pixels(pair):
    target, photo, truth = pair
    registration = register(target, photo, min_inliers=20)
    warped, mask = warp_to_photo(target, registration, photo.shape[:2])
    assert warped.shape == photo.shape and mask.dtype == bool
    assert mask.mean() > 0.9
    # Shrinking the target leaves the photo's border uncovered.
    shrink = registration.homography @ np.diag([0.5, 0.5, 1.0])
    _, small = warp_to_photo(target, Geometry(shrink, photo.shape[:2]), photo.shape[:2])
    assert small.mean() < 0.5


def test_rejects_unrelated_photo(pair):
    target, _, _ = pair
    other, _ = make_target("noise", (192, 192), seed=99)
    with pytest.raises(RegistrationError, match="too few"):
        register(target, other, min_inliers=20)


def test_rejects_flat_photo(pair):
    target, _, _ = pair
    with pytest.raises(RegistrationError, match="too few"):
        register(target, np.full_like(target, 0.5), min_inliers=20)


def test_degenerate_homography_is_refused():
    with pytest.raises(RegistrationError, match="degenerate"):
        check_homography(np.diag([1.0, -1.0, 1.0]), (100, 100), (100, 100))
    with pytest.raises(RegistrationError, match="degenerate"):
        check_homography(np.diag([0.01, 0.01, 1.0]), (100, 100), (100, 100))
    check_homography(np.eye(3), (100, 100), (100, 100))


def test_dense_flow_residual_is_small_after_a_good_homography(pair):
    target, photo, truth = pair
    registration = register(target, photo, min_inliers=20, dense_flow=True)
    assert registration.flow is not None and registration.flow.shape == (*photo.shape[:2], 2)
    assert np.abs(registration.flow[20:-20, 20:-20]).max() < 0.5
    warped, mask = warp_to_photo(target, registration, photo.shape[:2])
    assert warped.shape == photo.shape and mask.mean() > 0.8
