"""Registration and stage I on a realistic lens: geometric error against the true mapping, tone/colour.

A chart (``make-targets``) is photographed through ``lens_field`` presets (31-px PSFs with coma,
astigmatism and lateral colour), a homography moving the corners by a few pixels, radial distortion and
noise, then registered by ``prepare_pair``: once against the target blurred by the true PSFs (what the
registration can do when the PSF is known, e.g. iterated with the fit) and once with the low-pass alone
(the PSFs' centroid shifts then stay in the geometry). Stage I is fitted on the chart's patches.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/register.py [--presets phone-wide,dslr-kit]

Results: ``benchmarks/results/register.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from degtrans.atomic import write_atomic
from degtrans.calibrate.photos import HiddenCamera, synthesize_pairs
from degtrans.calibrate.prepare import PreparedPair, prepare_pair
from degtrans.calibrate.register import Geometry
from degtrans.calibrate.targets import make_targets
from degtrans.config import CalibrateConfig, RegisterConfig
from degtrans.simulate.optics import lens_field

IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
CAMERAS = {
    "linear": HiddenCamera(IDENTITY, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "gamma 2.2": HiddenCamera(gamma=(2.2, 2.2, 2.2)),
}


def interior_error(estimated: Geometry, truth: Geometry, border: int) -> tuple[float, float]:
    """RMS and max distance (photo pixels) between two photo → target maps, ``border`` px from the edge."""
    gap = np.hypot(*(estimated.target_coords() - truth.target_coords()).transpose(2, 0, 1))
    gap = gap[border:-border, border:-border] * np.sqrt(abs(np.linalg.det(truth.homography[:2, :2])))
    return float(np.sqrt((gap**2).mean())), float(gap.max())


def max_error(estimated: np.ndarray, truth) -> float:
    return round(float(np.abs(np.asarray(estimated) - np.asarray(truth)).max()), 4)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="phone-wide,dslr-kit")
    parser.add_argument("--size", default="512x768")
    parser.add_argument("--grid", default="5x7")
    parser.add_argument("--k", type=int, default=31)
    parser.add_argument("--noise", type=float, default=0.003)
    parser.add_argument("--jitter", type=float, default=2.0, help="corner displacement sigma (px)")
    parser.add_argument("--distortion", default="0.02,-0.005,0,0", help="k1,k2,p1,p2")
    parser.add_argument("--border", type=int, default=32, help="pixels left out at the frame's edge")
    parser.add_argument("--output", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--sigma", type=float, default=RegisterConfig.sigma, help="calibrate.register.sigma")
    args = parser.parse_args()
    torch.set_num_threads(1)
    frame = tuple(int(v) for v in args.size.split("x"))
    rows, cols = (int(v) for v in args.grid.split("x"))
    distortion = tuple(float(v) for v in args.distortion.split(","))
    config = CalibrateConfig(rows=rows, cols=cols, psf_size=args.k, register=RegisterConfig(sigma=args.sigma))
    report = []
    for preset in args.presets.split(","):
        # centred=False: the lens's centroid shifts stay in the PSFs (no distortion map), so the truth's
        # geometry is the homography and --distortion alone, as when these results were recorded.
        field = lens_field((rows, cols), args.k, frame, preset, centred=False)
        for camera_name, camera in CAMERAS.items():
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                targets = make_targets(root / "targets", n=2, size=frame, seed=5)
                synthesize_pairs(
                    targets, field, root / "pairs", seed=1, noise=args.noise, homography_jitter=args.jitter,
                    camera=camera, distortion=distortion,
                )  # fmt: skip
                truth_pairs = json.loads((root / "pairs" / "truth.json").read_text())["pairs"]
                name = "target_000_calib"
                truth = Geometry(np.array(truth_pairs[name]["homography"]), frame, np.array(distortion))
                paths = (root / "pairs" / f"{name}.target.png", root / "pairs" / f"{name}.photo.png")
                for mode, known in (("true PSFs", field), ("low-pass only", None)):
                    start = time.perf_counter()
                    pair = prepare_pair(name, *paths, config, (rows, cols), field=known)
                    seconds = time.perf_counter() - start
                    if not isinstance(pair, PreparedPair):
                        print(f"{preset} {camera_name} {mode}: rejected: {pair.reason}")
                        continue
                    rms, worst = interior_error(pair.geometry, truth, args.border)
                    row = {
                        "preset": preset,
                        "camera": camera_name,
                        "registration": mode,
                        "geometry_rms_px": round(rms, 4),
                        "geometry_max_px": round(worst, 4),
                        "distortion": np.round(pair.geometry.distortion, 4).tolist(),
                        "gamma": np.round(pair.tone.gamma, 4).tolist(),
                        "matrix_error": max_error(pair.tone.matrix, camera.colour_matrix),
                        "offset_error": max_error(pair.tone.offset, camera.offset),
                        "sharpness": round(pair.sharpness, 3),
                        "seconds": round(seconds, 1),
                    }  # fmt: skip
                    report.append(row)
                    print(json.dumps(row))
    if args.output is not None:
        command = "PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/register.py " + " ".join(
            f"--{k}={v}" for k, v in vars(args).items() if k != "output"
        )
        write_atomic(args.output, json.dumps({"command": command, "rows": report}, indent=1))


if __name__ == "__main__":
    main()
