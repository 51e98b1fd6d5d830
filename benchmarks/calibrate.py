"""Calibration benchmark on a realistic lens: stage II accuracy, seconds per tile, 1 vs 2 Ray actors.

The ``triplet`` lens (``lens_field``: astigmatic and comatic cross-shaped PSFs, lateral colour, a
distortion map), 5x7 tiles, k = 31, 512x768 by default; photographs of ``make-targets`` noise targets
(homography, the lens's distortion, the centred PSF field, noise σ = 0.003). With ``--geometry true``
(default) stage II gets the true registered targets and tone (``degtrans.testing.calibration``), so it
is judged alone; ``--geometry registered`` runs the whole pipeline (charts, registration, stage I,
registration and PSFs in turns: ``--register-rounds``, default the config's 2) on the same lens.
One more photograph is held out for the re-blur PSNR. For each number of targets it
prints the pixel error (raw, centroid-aligned), the in-band error and the floor the targets' band
implies, the held-out re-blur PSNR and seconds per tile; then the same calibration with 1 and 2 Ray
actors. Writes ``benchmarks/results/calibrate.json`` (rows and the command).

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate.py [--targets 4 8] [--skip-ray]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from degtrans.atomic import write_atomic
from degtrans.calibrate.metrics import reblur_psnr, target_band, truth_metrics
from degtrans.calibrate.photos import synthesize_pairs
from degtrans.calibrate.pipeline import calibrate_local, local_mapper, solve_field
from degtrans.calibrate.targets import make_targets
from degtrans.config import CalibrateConfig
from degtrans.field import PSFField
from degtrans.io import read_image
from degtrans.simulate.optics import lens_field
from degtrans.testing.calibration import oracle_pairs, oracle_problem

RESULTS = Path(__file__).resolve().parent / "results"


def _row(field: PSFField, truth: PSFField, band: float, reblur: float, seconds: float, tiles: int) -> dict:
    row = {"band_cycles_per_px": band, **truth_metrics(field, truth, band)}
    row.update(reblur_heldout_db=reblur, seconds=seconds, seconds_per_tile=seconds / tiles)
    return row


def _print(label: str, row: dict) -> None:
    r = row
    print(
        f"{label}: pixel error raw {r['raw_median']:.3f}/{r['raw_max']:.3f}, aligned"
        f" {r['aligned_median']:.3f}/{r['aligned_max']:.3f}, in-band {r['in_band_median']:.3f}/"
        f"{r['in_band_max']:.3f} (band {r['band_cycles_per_px']:.2f} c/px, floor"
        f" {r['floor_median']:.3f}/{r['floor_max']:.3f}), held-out re-blur {r['reblur_heldout_db']:.2f} dB,"
        f" {r['seconds_per_tile']:.2f} s/tile ({r['seconds']:.0f} s)"
    )


def _oracle(truth: PSFField, paths: list[Path], n: int, noise: float, seed: int, config: CalibrateConfig):
    targets = [read_image(p) for p in paths[: n + 1]]
    pairs = oracle_pairs(targets, truth, noise=noise, seed=seed)
    grid = (config.rows, config.cols)
    return oracle_problem(pairs[:n], grid, config.psf_size), oracle_problem(pairs[n:], grid, config.psf_size)


def _solve_true(truth, paths, n, noise, seed, config) -> tuple[PSFField, float, float, float]:
    fitted, heldout = _oracle(truth, paths, n, noise, seed, config)
    start = time.perf_counter()
    solution = solve_field(fitted, config, local_mapper(fitted, config, progress=False))
    seconds = time.perf_counter() - start
    field = PSFField(solution.psfs, truth.image_size)
    return field, target_band(fitted), min(reblur_psnr(field, heldout)), seconds


def _solve_registered(truth, root: Path, n: int, noise: float, seed: int, config: CalibrateConfig):
    """The whole pipeline on ``n`` photographs of charts and noise patterns, plus one held out."""
    size = truth.image_size
    paths = make_targets(root / f"charts{n}", n=n + 1, size=size, seed=seed, kinds=("calib", "noise"))
    pairs_dir = synthesize_pairs(paths, truth, root / f"pairs{n}", seed=seed, noise=noise)
    start = time.perf_counter()
    field = calibrate_local(pairs_dir, root / f"cam{n}.npz", dataclasses.replace(config, holdout=1), False)
    seconds = time.perf_counter() - start
    metrics = field.meta["metrics"]
    return field, metrics["target_band_cycles_per_px"], min(metrics["reblur_psnr_heldout_db"]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512x768")
    parser.add_argument("--grid", default="5x7")
    parser.add_argument("--k", type=int, default=31)
    parser.add_argument("--lens", default="triplet")
    parser.add_argument("--targets", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--noise", type=float, default=0.003)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--geometry", choices=["true", "registered"], default="true")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--register-rounds", type=int, default=CalibrateConfig.register_rounds)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    rows, cols = (int(v) for v in args.grid.split("x"))
    config = CalibrateConfig(
        rows=rows,
        cols=cols,
        psf_size=args.k,
        iterations=0,
        min_inliers=20,
        register_rounds=args.register_rounds,
    )
    truth = lens_field((rows, cols), args.k, size, args.lens)
    report: dict = {"problem": vars(args), "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_targets(root / "targets", max(args.targets) + 1, size, args.seed, kinds=("noise",))
        for n in args.targets:
            if args.geometry == "true":
                solved = _solve_true(truth, paths, n, args.noise, args.seed, config)
            else:
                solved = _solve_registered(truth, root, n, args.noise, args.seed, config)
            row = _row(solved[0], truth, *solved[1:], rows * cols)
            report["rows"][f"{n} targets"] = row
            _print(f"{n} targets", row)
        if not args.skip_ray and args.geometry == "true":
            from degtrans.cluster.calibrate import ray_mapper, start_fitters
            from degtrans.cluster.session import ensure_ray

            ensure_ray(num_cpus=2)
            n = args.targets[0]
            fitted, heldout = _oracle(truth, paths, n, args.noise, args.seed, config)
            for actors in (1, 2):
                cfg = dataclasses.replace(config, actors=actors)
                pool = start_fitters(fitted, cfg)
                start = time.perf_counter()
                solution = solve_field(fitted, cfg, ray_mapper(pool, cfg, progress=False))
                seconds = time.perf_counter() - start
                field = PSFField(solution.psfs, size)
                reblur = min(reblur_psnr(field, heldout))
                row = _row(field, truth, target_band(fitted), reblur, seconds, rows * cols)
                report["rows"][f"{n} targets, {actors} actor(s)"] = row
                _print(f"{n} targets, {actors} actor(s)", row)
    command = "PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/calibrate.py "
    report["command"] = command + " ".join(sys.argv[1:])
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = write_atomic(RESULTS / "calibrate.json", json.dumps(report, indent=2, default=float))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
