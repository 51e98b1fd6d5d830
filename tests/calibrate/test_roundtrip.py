"""Round trip: a known smooth Gaussian field → synthetic photographs (noise, homography, colour) →
calibration → every tile PSF within 0.15 relative L2, held-out re-blur within 40 dB (noise-free)."""

import dataclasses

import numpy as np
import pytest

from degtrans.calibrate.accuracy import psf_error
from degtrans.calibrate.photos import synthesize_pairs
from degtrans.calibrate.pipeline import calibrate_local, make_problem
from degtrans.calibrate.prepare import prepare_pair
from degtrans.calibrate.targets import make_targets
from degtrans.config import CalibrateConfig, RegisterConfig
from degtrans.field import PSFField
from degtrans.io import write_image
from degtrans.metrics import psnr_array
from degtrans.testing.synthetic import gaussian_field

SIZE, GRID, K = 256, (3, 3), 11
CONFIG = CalibrateConfig(rows=3, cols=3, psf_size=K, register=RegisterConfig(min_inliers=20))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("roundtrip")
    truth = gaussian_field(GRID, K, (SIZE, SIZE), sigma_centre=0.8, sigma_corner=2.0)
    targets = make_targets(root / "targets", n=5, size=(SIZE, SIZE), seed=1, kinds=("noise",))
    synthesize_pairs(targets[:3], truth, root / "pairs", seed=0, noise=0.004, homography_jitter=2.0)
    # One more target whose photo is noise-free; an unrelated photo must be rejected, not fatal.
    synthesize_pairs(targets[3:4], truth, root / "heldout", seed=5, noise=0.0, homography_jitter=2.0)
    write_image(root / "pairs" / "junk.target.png", np.full((64, 64, 3), 0.5, np.float32))
    write_image(root / "pairs" / "junk.photo.png", np.full((SIZE, SIZE, 3), 0.5, np.float32))
    field = calibrate_local(root / "pairs", root / "camera.npz", CONFIG, progress=False)
    return root, truth, field


def test_every_tile_psf_within_015(calibrated):
    _, truth, field = calibrated
    errors = psf_error(field, truth)
    assert errors.max() < 0.15, np.round(errors, 3)


def test_heldout_target_reblurred_within_40db(calibrated):
    root, _, field = calibrated
    name = "target_003_noise"
    pair = prepare_pair(
        name, root / "heldout" / f"{name}.target.png", root / "heldout" / f"{name}.photo.png", CONFIG, GRID
    )
    problem = make_problem([pair], CONFIG)
    blurred = field.blur(problem.targets[0], layout="chw")
    assert psnr_array(blurred, problem.photos[0], problem.masks[0]) > 40.0


def test_outputs_and_diagnostics(calibrated):
    root, _, field = calibrated
    loaded = PSFField.load(root / "camera.npz")
    np.testing.assert_array_equal(loaded.psfs, field.psfs)
    assert (root / "camera.report.png").stat().st_size > 10_000
    assert (root / "camera.npz.config.json").exists()
    tiles = loaded.meta["tiles"]
    assert np.array(tiles["pairs_used"]).min() == 3
    assert not np.array(tiles["filled_from_neighbours"]).any()
    errors = np.array(tiles["registration_error_px"], dtype=float)
    assert np.nanmax(errors) < 0.5
    assert [r["name"] for r in loaded.meta["rejected"]] == ["junk"]
    assert loaded.meta["camera"] == CONFIG.camera


def test_uncovered_tile_is_filled_and_flagged(calibrated, tmp_path):
    root, truth, _ = calibrated
    from degtrans.calibrate.pipeline import build_field, local_mapper, solve_field

    pairs = [
        prepare_pair(n, root / "pairs" / f"{n}.target.png", root / "pairs" / f"{n}.photo.png", CONFIG, GRID)
        for n in ("target_000_noise",)
    ]
    problem = make_problem(pairs, CONFIG)
    masks = problem.masks.copy()
    masks[:, : 2 * SIZE // 3, : 2 * SIZE // 3] = False  # tile (0, 0)'s whole region of influence
    problem = dataclasses.replace(problem, masks=masks)
    solution = solve_field(problem, CONFIG, local_mapper(problem, CONFIG, progress=False))
    assert set(solution.failed) == {(0, 0)}
    field = build_field(solution, pairs, [], CONFIG)
    assert field.meta["tiles"]["filled_from_neighbours"][0][0] is True
    assert field.meta["failed_tiles"][0]["tile"] == [0, 0]
    np.testing.assert_allclose(field.psfs[0, 0].sum(axis=(-1, -2)), 1.0, atol=1e-5)
