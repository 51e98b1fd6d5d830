"""Calibration benchmark: direct vs deep-linear PSFs (accuracy, time per tile) and 1 vs 2 Ray actors.

A larger round trip than the CI test: a Gaussian field (width and ellipticity growing toward the
corners), synthetic photographs of noise targets (noise, homography, colour matrix), calibration.
Prints the recovered-PSF error, the fit time per tile of each parameterisation, the total wall time
with 1 and 2 actors and their ratio, and writes ``benchmarks/results/calibrate.json``.

    .venv/bin/python benchmarks/calibrate.py [--size 384] [--grid 3x3] [--k 13] [--pairs 4] [--skip-ray]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from degtrans.calibrate.photos import find_pairs, synthesize_pairs
from degtrans.calibrate.pipeline import (
    local_mapper,
    make_problem,
    prepare_pair,
    psf_error,
    solve_field,
    split_prepared,
)
from degtrans.calibrate.targets import make_targets
from degtrans.config import CalibrateConfig
from degtrans.field import PSFField
from degtrans.testing.synthetic import gaussian_field

RESULTS = Path(__file__).resolve().parent / "results"


def _parameterisations(problem, truth: PSFField, config: CalibrateConfig) -> dict[str, dict]:
    """Both parameterisations from the same closed-form start; the descent round's time per tile."""
    out = {}
    for param in ("direct", "deep-linear"):
        cfg = dataclasses.replace(config, psf_param=param)
        start = time.perf_counter()
        solution = solve_field(problem, cfg, local_mapper(problem, cfg, progress=False))
        errors = psf_error(PSFField(solution.psfs, truth.image_size), truth)
        out[param] = {
            "psf_error_max": float(errors.max()),
            "psf_error_mean": float(errors.mean()),
            "descent_seconds_per_tile": float(np.mean([f.seconds for f in solution.fits.values()])),
            "total_seconds": time.perf_counter() - start,
        }
        print(
            f"{param:12s} error max {errors.max():.4f} mean {errors.mean():.4f}  "
            f"final-round fit {out[param]['descent_seconds_per_tile']:.2f} s/tile  "
            f"total {out[param]['total_seconds']:.1f} s"
        )
    closed = dataclasses.replace(config, iterations=0)
    solution = solve_field(problem, closed, local_mapper(problem, closed, progress=False))
    errors = psf_error(PSFField(solution.psfs, truth.image_size), truth)
    out["closed-form only"] = {"psf_error_max": float(errors.max()), "psf_error_mean": float(errors.mean())}
    print(f"{'closed form':12s} error max {errors.max():.4f} mean {errors.mean():.4f}")
    return out


def _actors(pairs_dir: Path, truth: PSFField, config: CalibrateConfig, out: Path) -> dict[str, dict]:
    from degtrans.cluster.calibrate import calibrate_camera
    from degtrans.cluster.session import ensure_ray

    ensure_ray(num_cpus=4)
    results = {}
    for actors in (1, 2):
        cfg = dataclasses.replace(config, actors=actors)
        start = time.perf_counter()
        field = calibrate_camera(pairs_dir, out / f"actors{actors}.npz", cfg, progress=False)
        seconds = time.perf_counter() - start
        results[str(actors)] = {
            "wall_seconds": seconds,
            "psf_error_max": float(psf_error(field, truth).max()),
        }
        print(
            f"{actors} actor(s): wall {seconds:.1f} s, error max {results[str(actors)]['psf_error_max']:.4f}"
        )
    results["speedup_2_vs_1"] = results["1"]["wall_seconds"] / results["2"]["wall_seconds"]
    print(f"speed-up 2 actors vs 1: {results['speedup_2_vs_1']:.2f}x")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--grid", default="3x3")
    parser.add_argument("--k", type=int, default=13)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.004)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    rows, cols = (int(v) for v in args.grid.split("x"))
    truth = gaussian_field((rows, cols), args.k, (args.size, args.size), sigma_centre=0.8, sigma_corner=2.2)
    config = CalibrateConfig(rows=rows, cols=cols, psf_size=args.k, min_inliers=20)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        targets = make_targets(
            root / "targets", n=args.pairs, size=(args.size, args.size), seed=7, kinds=("noise",)
        )
        synthesize_pairs(targets, truth, root / "pairs", seed=3, noise=args.noise)
        start = time.perf_counter()
        results = [prepare_pair(n, t, p, config, (rows, cols)) for n, t, p in find_pairs(root / "pairs")]
        prepared, _ = split_prepared(results)
        problem = make_problem(prepared, config)
        register_seconds = time.perf_counter() - start
        print(f"registration + stage I: {register_seconds:.1f} s for {len(prepared)} pairs")
        report = {
            "problem": {
                "size": args.size,
                "grid": [rows, cols],
                "k": args.k,
                "pairs": args.pairs,
                "noise": args.noise,
            },
            "register_seconds": register_seconds,
            "parameterisations": _parameterisations(problem, truth, config),
        }
        if not args.skip_ray:
            report["actors"] = _actors(root / "pairs", truth, config, root)
    report["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "calibrate.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
