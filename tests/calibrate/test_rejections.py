"""Unusable calibration photos are left out with their reason, and the run goes on.

A rig shows a chart and a noise pattern per pose (``make-targets`` default). Bad photos: clipped
(over-exposed), out of focus, of the wrong target (another chart; another pattern in a pose), and taken
at a steep angle."""

import json
import shutil

import numpy as np
import pytest

from degtrans.calibrate.photos import HiddenCamera, find_pairs, photograph, synthesize_pairs
from degtrans.calibrate.pipeline import split_prepared
from degtrans.calibrate.prepare import PreparedPair, Rejected, prepare_pair
from degtrans.calibrate.targets import make_target, make_targets
from degtrans.config import CalibrateConfig, RegisterConfig
from degtrans.io import read_image, write_image
from degtrans.testing.synthetic import gaussian_field

FRAME, GRID, K = (192, 256), (2, 3), 11
CONFIG = CalibrateConfig(rows=2, cols=3, psf_size=K, register=RegisterConfig(min_inliers=20))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rejections")
    targets = make_targets(root / "targets", n=4, size=FRAME, seed=2)
    field = gaussian_field(GRID, K, FRAME, sigma_centre=0.8, sigma_corner=1.6)
    synthesize_pairs(targets, field, root / "pairs", seed=0, noise=0.003, distortion=(0.01, 0.0, 0.0, 0.0))
    return root / "pairs", field


def _prepare(directory, name):
    return prepare_pair(name, directory / f"{name}.target.png", directory / f"{name}.photo.png", CONFIG, GRID)


def _copy_pose(pairs_dir, tmp_path, names):
    for name in names:
        for path in pairs_dir.glob(f"{name}.*"):
            shutil.copy(path, tmp_path / path.name)


@pytest.fixture(scope="module")
def good(pairs):
    directory, _ = pairs
    return [_prepare(directory, name) for name, _, _ in find_pairs(directory)]


def test_good_photos_are_registered_and_patterns_share_their_pose(good):
    results = good
    assert all(isinstance(r, PreparedPair) for r in results), results
    chart, noise = results[0], results[1]
    assert chart.method == "markers" and noise.method == "markers"
    np.testing.assert_array_equal(chart.geometry.homography, noise.geometry.homography)
    assert chart.sharpness > 0.5 and noise.sharpness > 0.5


def test_clipped_photo_is_rejected(pairs, tmp_path):
    directory, _ = pairs
    _copy_pose(directory, tmp_path, ["target_000_calib"])
    photo = read_image(tmp_path / "target_000_calib.photo.png")
    write_image(tmp_path / "target_000_calib.photo.png", photo * 1.4)
    result = _prepare(tmp_path, "target_000_calib")
    assert isinstance(result, Rejected) and result.reason.startswith("clipped"), result


def test_out_of_focus_photo_is_rejected(pairs, tmp_path):
    directory, _ = pairs
    _copy_pose(directory, tmp_path, ["target_000_calib", "target_001_noise"])
    truth = np.asarray(
        json.loads((directory / "truth.json").read_text())["pairs"]["target_001_noise"]["homography"]
    )
    defocused = gaussian_field(GRID, 21, FRAME, sigma_centre=4.0, sigma_corner=4.5)
    target = read_image(tmp_path / "target_001_noise.target.png")
    photo = photograph(
        target, defocused, truth, HiddenCamera(noise=0.003), np.random.default_rng(0), (0.01, 0, 0, 0)
    )
    write_image(tmp_path / "target_001_noise.photo.png", photo)
    result = _prepare(tmp_path, "target_001_noise")
    assert isinstance(result, Rejected) and result.reason.startswith("out of focus"), result


def test_photo_blurrier_than_the_rest_of_the_run_is_rejected(good):
    results = list(good)
    worst = results[2]
    results[2] = PreparedPair(**{**worst.__dict__, "sharpness": 0.3 * worst.sharpness})
    prepared, rejected = split_prepared(results, focus_ratio=0.5)
    assert [r.name for r in rejected] == [worst.name] and "out of focus" in rejected[0].reason
    assert len(prepared) == 3


def test_wrong_targets_are_rejected(pairs, tmp_path):
    directory, field = pairs
    _copy_pose(directory, tmp_path, ["target_000_calib", "target_001_noise"])
    homography = np.asarray(
        json.loads((directory / "truth.json").read_text())["pairs"]["target_000_calib"]["homography"]
    )
    # The chart's photo shows another chart (another pose's markers).
    other, _ = make_target("calib", FRAME, seed=9, pose=7)
    write_image(
        tmp_path / "target_000_calib.photo.png",
        photograph(other, field, homography, HiddenCamera(noise=0.003), np.random.default_rng(0)),
    )
    result = _prepare(tmp_path, "target_000_calib")
    assert isinstance(result, Rejected) and result.reason.startswith("wrong target"), result
    # The pose's noise pattern photo shows some other pattern.
    _copy_pose(directory, tmp_path, ["target_000_calib"])
    stranger, _ = make_target("noise", FRAME, seed=123)
    write_image(
        tmp_path / "target_001_noise.photo.png",
        photograph(stranger, field, homography, HiddenCamera(noise=0.003), np.random.default_rng(0)),
    )
    result = _prepare(tmp_path, "target_001_noise")
    assert isinstance(result, Rejected) and result.reason.startswith("wrong target"), result


def test_steep_angle_is_rejected_and_the_run_goes_on(pairs, tmp_path):
    from tests.calibrate.test_register import _tilted

    directory, field = pairs
    _copy_pose(
        directory, tmp_path, ["target_000_calib", "target_001_noise", "target_002_calib", "target_003_noise"]
    )
    target = read_image(tmp_path / "target_002_calib.target.png")
    steep = photograph(
        target, field, _tilted(30.0, FRAME, "y"), HiddenCamera(noise=0.003), np.random.default_rng(0)
    )
    write_image(tmp_path / "target_002_calib.photo.png", steep)
    results = [_prepare(tmp_path, name) for name, _, _ in find_pairs(tmp_path)]
    prepared, rejected = split_prepared(results)
    # The steep chart takes its pose's noise pattern with it; the other pose goes on.
    assert [p.name for p in prepared] == ["target_000_calib", "target_001_noise"]
    assert {r.name for r in rejected} == {"target_002_calib", "target_003_noise"}
    assert all(r.reason.startswith("steep angle") for r in rejected), rejected
