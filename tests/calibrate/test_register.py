"""Registration: a known homography to < 0.1 px from features; charts through a realistic lens by markers,
then refined against the blurred target to < 0.05 px with distortion; pairs that cannot be registered."""

import numpy as np
import pytest

from degtrans.calibrate.photos import HiddenCamera, jitter_homography, photograph
from degtrans.calibrate.register import (
    Geometry,
    RegistrationError,
    check_homography,
    coarse_geometry,
    refine,
    tilt_degrees,
    to_gray,
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


def _register(target: np.ndarray, photo: np.ndarray) -> tuple[Geometry, int]:
    """Coarse geometry, then the fine step on luminance (a gain and offset absorb a linear photo's)."""
    geometry, inliers, _ = coarse_geometry(target, photo, None, min_inliers=20)
    geometry, _, _ = refine(to_gray(target), to_gray(photo), geometry)
    return geometry, inliers


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
    geometry, inliers = _register(target, photo)
    assert inliers >= 20
    assert _corner_error(geometry.homography, truth, target.shape[:2]) < 0.1


def test_warp_mask_marks_covered_pixels(pair):
    target, photo, truth = pair
    geometry, _ = _register(target, photo)
    warped, mask = warp_to_photo(target, geometry, photo.shape[:2])
    assert warped.shape == photo.shape and mask.dtype == bool
    assert mask.mean() > 0.9
    # Shrinking the target leaves the photo's border uncovered.
    shrink = geometry.homography @ np.diag([0.5, 0.5, 1.0])
    _, small = warp_to_photo(target, Geometry(shrink, photo.shape[:2]), photo.shape[:2])
    assert small.mean() < 0.5


def test_rejects_unrelated_photo(pair):
    target, _, _ = pair
    other, _ = make_target("noise", (192, 192), seed=99)
    with pytest.raises(RegistrationError, match="too few"):
        _register(target, other)


def test_rejects_flat_photo(pair):
    target, _, _ = pair
    with pytest.raises(RegistrationError, match="too few"):
        _register(target, np.full_like(target, 0.5))


def test_degenerate_homography_is_refused():
    with pytest.raises(RegistrationError, match="degenerate"):
        check_homography(np.diag([1.0, -1.0, 1.0]), (100, 100), (100, 100))
    with pytest.raises(RegistrationError, match="degenerate"):
        check_homography(np.diag([0.01, 0.01, 1.0]), (100, 100), (100, 100))
    check_homography(np.eye(3), (100, 100), (100, 100))


# Charts: markers, blur-unbiased refinement, distortion, tilt ------------------------------------------

FRAME = (256, 384)
DISTORTION = (0.02, -0.005, 0.0, 0.0)


@pytest.fixture(scope="module")
def lens_chart():
    """A chart photographed through a realistic lens (21-px PSFs with coma, astigmatism, lateral colour;
    green centroids up to ~1 px off centre), a homography, radial distortion (~7 px at the corners) and
    noise 0.003, in linear light."""
    from degtrans.simulate.optics import lens_field

    target, layout = make_target("calib", FRAME, seed=1)
    # centred=False: the centroid shifts stay inside the PSFs (no distortion map), so the truth's geometry
    # is the homography and DISTORTION alone.
    field = lens_field((2, 3), 21, FRAME, "phone-wide", centred=False)
    rng = np.random.default_rng(0)
    homography = jitter_homography(FRAME, FRAME, 2.0, rng)
    identity = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    photo = photograph(
        target, field, homography, HiddenCamera(identity, (0, 0, 0), (1, 1, 1), 0.003), rng, DISTORTION
    )
    return target, layout, field, photo, Geometry(homography, FRAME, np.array(DISTORTION))


def _interior_error(estimated: Geometry, truth: Geometry, border: int = 20) -> tuple[float, float]:
    """RMS and max distance (photo pixels) between two photo → target maps, away from the frame's border."""
    gap = np.hypot(*(estimated.target_coords() - truth.target_coords()).transpose(2, 0, 1))
    scale = np.sqrt(abs(np.linalg.det(truth.homography[:2, :2])))  # photo pixels per target pixel
    gap = gap[border:-border, border:-border] * scale
    return float(np.sqrt((gap**2).mean())), float(gap.max())


def test_markers_give_a_coarse_geometry_through_heavy_blur(lens_chart):
    target, layout, _, photo, truth = lens_chart
    geometry, inliers, method = coarse_geometry(target, photo, layout)
    assert method == "markers" and inliers >= 16
    rms, _ = _interior_error(geometry, truth)
    assert rms < 1.5


def test_registration_against_the_blurred_target_is_unbiased(lens_chart):
    """With the PSF known, geometry (homography + distortion) within 0.05 px RMS; the low-pass alone
    keeps the PSFs' centroid shifts (coma) in the geometry."""
    from degtrans.calibrate.prepare import field_render

    target, layout, field, photo, truth = lens_chart
    start, _, _ = coarse_geometry(target, photo, layout)
    green_target, green_photo = target[..., 1], photo[..., 1]
    geometry, correlation, residual = refine(
        green_target, green_photo, start, render=field_render(field), grid=(2, 3)
    )
    rms, worst = _interior_error(geometry, truth)
    assert rms < 0.05 and worst < 0.1, (rms, worst)
    assert correlation > 0.999 and residual < 0.05
    np.testing.assert_allclose(geometry.distortion, DISTORTION, atol=2e-3)
    lowpass, _, _ = refine(green_target, green_photo, start, grid=(2, 3))
    assert _interior_error(lowpass, truth)[0] > 0.2


def test_distortion_is_added_only_when_the_homography_leaves_a_residual(lens_chart):
    from degtrans.calibrate.prepare import field_render

    target, layout, field, photo, _ = lens_chart
    start, _, _ = coarse_geometry(target, photo, layout)
    render = field_render(field)
    plain, _, residual = refine(
        target[..., 1], photo[..., 1], start, render=render, distortion="none", grid=(2, 3)
    )
    assert np.all(plain.distortion == 0) and residual > 0.05
    # A photo without distortion: "auto" keeps the pure homography.
    undistorted = photograph(
        target, field, lens_chart[4].homography, HiddenCamera(noise=0.0), np.random.default_rng(1)
    )
    start, _, _ = coarse_geometry(target, undistorted, layout)
    camera = np.asarray(HiddenCamera().colour_matrix, np.float32)
    model = (target @ camera.T + np.asarray(HiddenCamera().offset, np.float32))[..., 1]
    auto, _, residual = refine(model, undistorted[..., 1], start, render=render, grid=(2, 3))
    assert np.all(auto.distortion == 0) and residual < 0.05


def test_geometry_round_trips_through_the_photograph_model():
    geometry = Geometry(
        np.array([[1.01, 0.02, 3.0], [-0.01, 0.99, -2.0], [1e-5, -2e-5, 1.0]]), (60, 80), np.array(DISTORTION)
    )
    coords = geometry.target_coords()
    assert coords.shape == (60, 80, 2)
    # Parameters in pixel units and back: the same map.
    from degtrans.calibrate.register import _from_params, _to_params

    again = _from_params(_to_params(geometry), (60, 80))
    np.testing.assert_allclose(again.target_coords(), coords, atol=1e-3)


def _tilted(angle_deg: float, frame: tuple[int, int], axis: str) -> np.ndarray:
    """Homography of a chart filling ``frame`` turned by ``angle_deg`` about its x or y axis (pinhole
    camera whose half-diagonal field is 30 degrees)."""
    height, width = frame
    focal = np.hypot(height, width) / 2 / np.tan(np.radians(30.0))
    a = np.radians(angle_deg)
    c, s = np.cos(a), np.sin(a)
    rotation = (
        np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        if axis == "y"
        else np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    )
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    plane = np.column_stack([rotation[:, 0], rotation[:, 1], [0, 0, focal]])
    h = camera @ plane @ np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]])
    return h / h[2, 2]


@pytest.mark.parametrize("axis", ["x", "y"])
def test_tilt_is_measured_from_the_homography(axis):
    for angle in (0.0, 10.0, 35.0):
        assert tilt_degrees(_tilted(angle, FRAME, axis), FRAME, FRAME) == pytest.approx(angle, abs=0.1)
    jitter = jitter_homography(FRAME, FRAME, 2.0, np.random.default_rng(0))
    assert tilt_degrees(jitter, FRAME, FRAME) < 2.0


def test_another_chart_is_the_wrong_target(lens_chart):
    target, _, field, _, truth = lens_chart
    other, _ = make_target("calib", FRAME, seed=5, pose=4)
    photo = photograph(other, field, truth.homography, HiddenCamera(noise=0.003), np.random.default_rng(2))
    _, layout = make_target("calib", FRAME, seed=1)
    with pytest.raises(RegistrationError, match="wrong target"):
        coarse_geometry(target, photo, layout)


def test_missing_markers_are_reported_as_missing_not_as_another_chart(monkeypatch):
    """A blurred chart lets the detector report a few stray ids: no chart. A set of another chart's ids
    is the wrong target."""
    from degtrans.calibrate import register as register_module
    from degtrans.calibrate.register import markers_homography

    _, layout = make_target("calib", (192, 256), seed=1, pose=0)
    quad = np.zeros((4, 2))
    photo = np.zeros((192, 256, 3), np.float32)
    monkeypatch.setattr(register_module, "detect_markers", lambda p, lay: {0: quad, 113: quad, 517: quad})
    with pytest.raises(RegistrationError, match="^chart markers not found: 1 of the chart's 8"):
        markers_homography(photo, layout)
    other_chart = {56 + j: quad for j in range(5)}
    monkeypatch.setattr(register_module, "detect_markers", lambda p, lay: other_chart)
    with pytest.raises(RegistrationError, match="^wrong target: markers \\[56, 57, 58, 59, 60\\]"):
        markers_homography(photo, layout)
