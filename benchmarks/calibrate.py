"""Calibration benchmark on a realistic lens: the whole pipeline's accuracy, seconds per tile, 1 vs 2 Ray
actors.

The ``triplet`` lens (``lens_field``: astigmatic and comatic cross-shaped PSFs, lateral colour, a
distortion map with barrel distortion and coma's centroid shift), 5x7 tiles, k = 31, 512x768 by
default. ``--geometry registered`` (default): the WHOLE pipeline on ``make-targets`` charts and noise
patterns photographed through the lens (a homography per pose, the lens's distortion, the hidden
camera's colour matrix and black offset, noise σ = 0.003): markers, stage I on the patches, fine
registration, stage II, registration and PSFs in turns (``--register-rounds``, default the config's).
``--geometry true`` gives stage II the true registered targets and tone
(``degtrans.testing.calibration``), so it is judged alone. One more photograph is held out for the
re-blur PSNR. For each number of targets it prints the pixel error (raw, centroid-aligned), the
in-band error and the floor the targets' band implies, the held-out re-blur PSNR and seconds per
tile; then the first number of targets again with 1 and 2 Ray actors (``calibrate_camera``, the
demo's runner). Writes ``benchmarks/results/calibrate.json`` (rows and the command).

``--demo [SCALE ...]`` instead repeats the demo's calibration (``degtrans demo``'s hidden phone-wide
camera, 3x4 tiles, k = 15, 256x384, 4 targets; the local runner) at the demo's target size and with
targets SCALE times the frame, and writes ``benchmarks/results/calibrate_demo.json``.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate.py [--targets 4 8] [--skip-ray]
    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate.py --demo 1 1.25
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


def _pairs(truth: PSFField, root: Path, n: int, noise: float, seed: int) -> Path:
    """Photographs of ``n`` charts and noise patterns, plus one more chart to hold out."""
    kinds = ("calib", "noise")
    paths = make_targets(root / f"charts{n}", n=n + 1, size=truth.image_size, seed=seed, kinds=kinds)
    return synthesize_pairs(paths, truth, root / f"pairs{n}", seed=seed, noise=noise)


def _solve_registered(pairs_dir: Path, output: Path, config: CalibrateConfig, actors: int | None = None):
    """The whole pipeline (``calibrate_local``, or ``calibrate_camera`` with ``actors`` Ray actors)."""
    config = dataclasses.replace(config, holdout=1, actors=actors or config.actors)
    start = time.perf_counter()
    if actors is None:
        field = calibrate_local(pairs_dir, output, config, False)
    else:
        from degtrans.cluster.calibrate import calibrate_camera

        field = calibrate_camera(pairs_dir, output, config, progress=False)
    seconds = time.perf_counter() - start
    metrics = field.meta["metrics"]
    rejected = field.meta.get("rejected") or []
    if rejected:
        print(f"  rejected: {rejected}")
    return field, metrics["target_band_cycles_per_px"], min(metrics["reblur_psnr_heldout_db"]), seconds


def demo_calibration(root: Path, target_scale: float | None) -> dict:
    """The demo's hidden camera as ``degtrans demo`` makes and calibrates it (``stage_targets`` and
    ``stage_calibrate``, with the local runner instead of Ray: the same rounds), its targets
    ``target_scale`` times the frame (``None``: the demo's own size); the demo's mean errors."""
    from degtrans.calibrate.metrics import band_floor, in_band_error
    from degtrans.calibrate.pipeline import psf_error
    from degtrans.demo import CAL_FRAME, CAL_TARGET, demo_config

    config = demo_config().calibrate
    truth = lens_field((config.rows, config.cols), config.psf_size, CAL_FRAME, "phone-wide", camera="hidden")
    size = CAL_TARGET if target_scale is None else tuple(round(v * target_scale) for v in CAL_FRAME)
    targets = make_targets(root / "demo_targets", n=4, size=size, seed=config.seed)
    pairs = synthesize_pairs(targets, truth, root / "demo_pairs", seed=config.seed)
    start = time.perf_counter()
    field = calibrate_local(pairs, root / "demo.npz", config, False)
    seconds = time.perf_counter() - start
    band = field.meta["metrics"]["target_band_cycles_per_px"]
    raw, aligned = psf_error(field, truth), psf_error(field, truth, align=True)
    return {
        "target_size": list(size),
        "raw_mean": float(raw.mean()),
        "raw_max": float(raw.max()),
        "aligned_mean": float(aligned.mean()),
        "aligned_max": float(aligned.max()),
        "band_cycles_per_px": band,
        "in_band_mean": float(in_band_error(field, truth, band).mean()),
        "floor_mean": float(band_floor(truth, band).mean()),
        "seconds": seconds,
    }


def demo_main(scales: list[float]) -> None:
    """``--demo``: the demo's calibration at the demo's target size, then at each of ``scales``."""
    report: dict = {"rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in [None, *scales]:
            row = demo_calibration(Path(tmp) / str(scale), scale)
            label = f"targets {row['target_size'][0]}x{row['target_size'][1]}"
            report["rows"][label] = row
            print(
                f"demo, {label}: mean pixel error raw {row['raw_mean']:.3f} (max {row['raw_max']:.3f}),"
                f" aligned {row['aligned_mean']:.3f} (max {row['aligned_max']:.3f}), in-band"
                f" {row['in_band_mean']:.3f}, floor {row['floor_mean']:.3f} (band"
                f" {row['band_cycles_per_px']:.2f} c/px), {row['seconds']:.0f} s"
            )
    report["command"] = "PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/calibrate.py " + " ".join(
        sys.argv[1:]
    )
    path = write_atomic(RESULTS / "calibrate_demo.json", json.dumps(report, indent=2, default=float))
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--demo",
        type=float,
        nargs="*",
        default=None,
        metavar="SCALE",
        help="instead: the demo's hidden camera, targets at the demo's size and at each SCALE x the frame",
    )
    parser.add_argument("--size", default="512x768")
    parser.add_argument("--grid", default="5x7")
    parser.add_argument("--k", type=int, default=31)
    parser.add_argument("--lens", default="triplet")
    parser.add_argument("--targets", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--noise", type=float, default=0.003)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--geometry", choices=["true", "registered"], default="registered")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--register-rounds", type=int, default=CalibrateConfig.register_rounds)
    args = parser.parse_args()
    if args.demo is not None:
        demo_main(args.demo)
        return
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
    tiles = rows * cols

    def record(label: str, solved: tuple) -> None:
        row = _row(solved[0], truth, *solved[1:], tiles)
        report["rows"][label] = row
        _print(label, row)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_targets(root / "targets", max(args.targets) + 1, size, args.seed, kinds=("noise",))
        for n in args.targets:
            if args.geometry == "true":
                record(f"{n} targets", _solve_true(truth, paths, n, args.noise, args.seed, config))
            else:
                pairs_dir = _pairs(truth, root, n, args.noise, args.seed)
                record(f"{n} targets", _solve_registered(pairs_dir, root / f"cam{n}.npz", config))
        if not args.skip_ray:
            from degtrans.cluster.session import ensure_ray

            ensure_ray(num_cpus=2)
            n = args.targets[0]
            for actors in (1, 2):
                label = f"{n} targets, {actors} actor(s)"
                if args.geometry == "registered":
                    output = root / f"cam{n}_ray{actors}.npz"
                    record(label, _solve_registered(root / f"pairs{n}", output, config, actors))
                    continue
                from degtrans.cluster.calibrate import ray_mapper, start_fitters

                fitted, heldout = _oracle(truth, paths, n, args.noise, args.seed, config)
                cfg = dataclasses.replace(config, actors=actors)
                pool = start_fitters(fitted, cfg)
                start = time.perf_counter()
                solution = solve_field(fitted, cfg, ray_mapper(pool, cfg, progress=False))
                seconds = time.perf_counter() - start
                field = PSFField(solution.psfs, size)
                record(label, (field, target_band(fitted), min(reblur_psnr(field, heldout)), seconds))
    command = "PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/calibrate.py "
    report["command"] = command + " ".join(sys.argv[1:])
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = write_atomic(RESULTS / "calibrate.json", json.dumps(report, indent=2, default=float))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
