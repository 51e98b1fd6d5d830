"""Round trip on a realistic lens through the WHOLE pipeline: ``make-targets`` charts and noise patterns,
photographed by the triplet lens (k = 31: astigmatism, coma, lateral colour; its distortion map with
barrel distortion and coma's centroid shift), a homography per pose, the hidden camera's colour matrix
and black offset, noise σ = 0.003; then ``calibrate_local``: markers → stage I on the patches → fine
registration → stage II, registration and PSFs solved in turns (``register_rounds``).
Bounds: centroid-aligned pixel error median <= 0.10, max <= 0.20; held-out re-blur >= 40 dB.
Measured with this setup: 0.076 / 0.086, 44.9 dB (0.079 / 0.098, 44.7 dB with the earlier radial-band
targets; with those and one registration, ``register_rounds=0``: 0.184 / 0.227).
At k = 25 the same run gives 0.103 / 0.106; 192x256 frames are too small for the charts' patches at
these PSF sizes. About 1.5-2 min of CPU (three registrations and stage II solves): marked slow.
"""

import numpy as np
import pytest

from degtrans.calibrate.accuracy import psf_error
from degtrans.calibrate.photos import synthesize_pairs
from degtrans.calibrate.pipeline import calibrate_local
from degtrans.calibrate.targets import make_targets
from degtrans.config import CalibrateConfig, RegisterConfig
from degtrans.simulate.optics import lens_field

FRAME, GRID, K = (256, 384), (3, 4), 31
# The default focus check (``min_sharpness``) must pass this blurry lens in focus.
CONFIG = CalibrateConfig(
    rows=GRID[0], cols=GRID[1], psf_size=K, holdout=1, register=RegisterConfig(min_inliers=20)
)


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("lens_full")
    truth = lens_field(GRID, K, FRAME, "triplet")
    paths = make_targets(root / "targets", n=5, size=FRAME, seed=7, kinds=("calib", "noise"))
    synthesize_pairs(paths, truth, root / "pairs", seed=7, noise=0.003)
    field = calibrate_local(root / "pairs", root / "camera.npz", CONFIG, progress=False)
    return truth, field


def test_realistic_lens_full_pipeline_within_bounds(calibrated):
    truth, field = calibrated
    assert not field.meta["rejected"], field.meta["rejected"]
    aligned = psf_error(field, truth, align=True)
    assert np.median(aligned) <= 0.10 and aligned.max() <= 0.20, np.round(aligned, 3)
    assert min(field.meta["metrics"]["reblur_psnr_heldout_db"]) >= 40.0
