"""Round trip on a realistic lens through the WHOLE pipeline: ``make-targets`` charts and noise patterns,
photographed by the triplet lens (k = 25: astigmatism, coma, lateral colour; its distortion map with
barrel distortion and coma's centroid shift), a homography per pose, the hidden camera's colour matrix
and black offset, noise σ = 0.003; then ``calibrate_local``: markers → stage I on the patches → fine
registration → stage II, registration and PSFs solved in turns (``register_rounds``).
Bounds: centroid-aligned pixel error median <= 0.10, max <= 0.20; held-out re-blur >= 40 dB.
"""

import numpy as np
import pytest

from degtrans.calibrate.photos import synthesize_pairs
from degtrans.calibrate.pipeline import calibrate_local, psf_error
from degtrans.calibrate.targets import make_targets
from degtrans.config import CalibrateConfig
from degtrans.simulate.optics import lens_field

FRAME, GRID, K = (192, 256), (3, 3), 25
CONFIG = CalibrateConfig(
    rows=GRID[0], cols=GRID[1], psf_size=K, iterations=0, min_inliers=20, holdout=1, min_sharpness=0.1
)


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
