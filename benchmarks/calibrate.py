"""Calibration benchmark on a realistic lens: the whole pipeline's accuracy, seconds per tile, 1 vs 2 Ray
actors.

The ``triplet`` lens (``lens_field``: astigmatic and comatic cross-shaped PSFs, lateral colour, a
distortion map with barrel distortion and coma's centroid shift), 5x7 tiles, k = 31, 512x768 by
default. ``--geometry registered`` (default): the WHOLE pipeline on ``make-targets`` charts and noise
patterns (``--target-scale`` times the frame) photographed through the lens by the hidden camera
(``--camera integrate``: the piecewise-constant target averaged over each sensor pixel, ``--supersample``
samples per side; ``bicubic``: resampled at the pixel centres, the camera before issue 22), a
homography per pose, the lens's distortion, the camera's colour matrix and black offset, noise σ =
0.003: markers, stage I on the patches, fine registration, stage II, registration and PSFs in turns
(``--register-rounds``, default the config's). ``--geometry true`` gives stage II the true registered
targets and tone (``degtrans.testing.calibration``), so it is judged alone. One more photograph is held
out for the re-blur PSNR (with the noise floor ``20 log10(1 / noise)``). For each number of targets it
prints the pixel error (raw, centroid-aligned), the in-band error and the floor the targets' band
implies, the held-out re-blur PSNR and seconds per tile; then the first number of targets again with
each of ``--actors`` Ray actors (``calibrate_camera``, the demo's runner) and the speed-up against the
first. ``--profile`` adds the wall time of each step (registration, stage I, stage II's init and joint
solve, per pair and per tile). ``--device cuda`` runs the local runner (no Ray: the actors' work called
directly) with stage II on the GPU. Writes ``benchmarks/results/calibrate.json`` (or ``--output``).

``--demo [SCALE ...]`` instead repeats the demo's calibration (``degtrans demo``'s hidden phone-wide
camera, 3x4 tiles, k = 15, 256x384, 4 targets; the local runner) at the demo's target size and with
targets SCALE times the frame, and writes ``benchmarks/results/calibrate_demo.json``.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate.py [--targets 4 8] [--skip-ray]
    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate.py --lens sharp-centre \
        --target-scale 1.5 --targets 4 --skip-ray --output benchmarks/results/calibrate_sharp.json
    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate.py --demo 1 1.25
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from degtrans.atomic import write_atomic
from degtrans.calibrate.accuracy import reblur_psnr, target_band, truth_metrics
from degtrans.calibrate.photos import HiddenCamera, synthesize_pairs
from degtrans.calibrate.pipeline import calibrate_local, local_mapper, solve_field
from degtrans.calibrate.targets import make_targets
from degtrans.config import ActorsConfig, CalibrateConfig, RegisterConfig, replace_checked
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
        f" {r['seconds_per_tile']:.2f} s/tile ({r['seconds']:.0f} s)",
        flush=True,
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


def _pairs(truth: PSFField, root: Path, n: int, args: argparse.Namespace) -> Path:
    """Photographs of ``n`` charts and noise patterns, plus one more chart to hold out."""
    kinds = ("calib", "noise")
    size = tuple(round(v * args.target_scale) for v in truth.image_size)
    paths = make_targets(root / f"charts{n}", n=n + 1, size=size, seed=args.seed, kinds=kinds)
    camera = HiddenCamera(sensor=args.camera, supersample=args.supersample)
    return synthesize_pairs(paths, truth, root / f"pairs{n}", seed=args.seed, noise=args.noise, camera=camera)


def _solve_registered(pairs_dir: Path, output: Path, config: CalibrateConfig, actors: int | None = None):
    """The whole pipeline (``calibrate_local``, or ``calibrate_camera`` with ``actors`` Ray actors)."""
    config = dataclasses.replace(
        config, holdout=1, ray=dataclasses.replace(config.ray, actors=actors or config.ray.actors)
    )
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


class Profile:
    """Wall time of the pipeline's steps, by wrapping the functions the local runner calls (this
    process only: with Ray, the actors' and tasks' time is not seen)."""

    PREPARE = {
        "read_image": "read images",
        "coarse_geometry": "registration: markers",
        "patch_samples": "stage I (patches)",
        "fit_patches": "stage I (patches)",
        "refine": "registration: fine",
        "tile_shifts": "registration: tile shifts",
        "warp_to_photo": "registration: target on the sensor",
        "correlation": "photo checks",
        "sharpness": "photo checks",
    }
    PIPELINE = {
        "fit_tile": "stage II: init, per tile",
        "solve_joint": "stage II: joint solve",
        "write_outputs": "metrics and report",
    }
    SHARD = {
        "__init__": "stage II joint: shard set-up",
        "stats": "stage II joint: shard set-up",
        "normal": "stage II joint: normal product",
    }

    def __init__(self) -> None:
        import degtrans.calibrate.pipeline as pipeline
        import degtrans.calibrate.prepare as prepare
        from degtrans.calibrate.shards import Shard

        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.Counter()
        self._undo: list = []
        for owner, names in ((prepare, self.PREPARE), (pipeline, self.PIPELINE), (Shard, self.SHARD)):
            for name, label in names.items():
                original = getattr(owner, name)
                setattr(owner, name, self._timed(original, label))
                self._undo.append((owner, name, original))

    def _timed(self, function, label: str):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1

        return timed

    def close(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)

    def table(self, total: float) -> list[dict]:
        return [
            {"step": label, "seconds": self.seconds[label], "calls": self.calls[label],
             "per_call": self.seconds[label] / self.calls[label], "share": self.seconds[label] / total}
            for label in sorted(self.seconds, key=lambda k: -self.seconds[k])
        ]  # fmt: skip


def demo_calibration(root: Path, target_scale: float | None) -> dict:
    """The demo's hidden camera as ``degtrans demo`` makes and calibrates it (``stage_targets`` and
    ``stage_calibrate``, with the local runner instead of Ray: the same rounds), its targets
    ``target_scale`` times the frame (``None``: the demo's own size); the demo's mean errors."""
    from degtrans.calibrate.accuracy import band_floor, in_band_error, psf_error
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
    parser.add_argument("--target-scale", type=float, default=1.0, help="targets' size / the frame's")
    parser.add_argument("--camera", choices=["integrate", "bicubic"], default="integrate")
    parser.add_argument("--supersample", type=int, default=HiddenCamera.supersample)
    parser.add_argument("--noise", type=float, default=0.003)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--geometry", choices=["true", "registered"], default="registered")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-local", action="store_true", help="only the Ray rows")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--register-rounds", type=int, default=RegisterConfig.rounds)
    parser.add_argument("--profile", action="store_true", help="time each step of the local runs")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="stage II's device (local)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a calibrate. key")
    parser.add_argument("--output", type=Path, default=RESULTS / "calibrate.json")
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
        register=RegisterConfig(min_inliers=20, rounds=args.register_rounds),
        ray=ActorsConfig(gpus_per_actor=1.0 if args.device == "cuda" else 0.0),
    )
    if bad := [item for item in args.set if "=" not in item]:
        parser.error(f"--set {bad[0]!r}: expected KEY=VALUE (a calibrate. key)")
    overrides = {k.strip(): v.strip() for k, v in (item.split("=", 1) for item in args.set)}
    config = replace_checked(config, overrides, "--set")
    truth = lens_field((rows, cols), args.k, size, args.lens)
    report: dict = {"problem": {**vars(args), "output": str(args.output)}, "rows": {}}
    report["problem"]["noise_floor_db"] = float(-20 * np.log10(args.noise)) if args.noise > 0 else None
    tiles = rows * cols

    def record(label: str, solved: tuple) -> dict:
        row = _row(solved[0], truth, *solved[1:], tiles)
        report["rows"][label] = row
        _print(label, row)
        return row

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_targets(root / "targets", max(args.targets) + 1, size, args.seed, kinds=("noise",))
        for n in args.targets:
            if args.geometry == "registered":
                pairs_dir = _pairs(truth, root, n, args)
            if args.skip_local:
                continue
            profile = Profile() if args.profile else None
            try:
                if args.geometry == "true":
                    row = record(f"{n} targets", _solve_true(truth, paths, n, args.noise, args.seed, config))
                else:
                    row = record(f"{n} targets", _solve_registered(pairs_dir, root / f"cam{n}.npz", config))
            finally:
                if profile is not None:
                    profile.close()
            if profile is not None:
                row["profile"] = profile.table(row["seconds"])
                for step in row["profile"]:
                    print(
                        f"  {step['step']:38s} {step['seconds']:8.1f} s {100 * step['share']:5.1f} %"
                        f"  {step['calls']:5d} calls, {step['per_call']:.3f} s each"
                    )
        if not args.skip_ray:
            from degtrans.cluster.session import ensure_ray

            ensure_ray(num_cpus=max(2, max(args.actors)))
            n = args.targets[0]
            first = None
            for actors in args.actors:
                label = f"{n} targets, {actors} actor(s)"
                if args.geometry == "registered":
                    output = root / f"cam{n}_ray{actors}.npz"
                    row = record(label, _solve_registered(root / f"pairs{n}", output, config, actors))
                else:
                    from degtrans.cluster.calibrate import ray_mapper, ray_shards, start_fitters

                    fitted, heldout = _oracle(truth, paths, n, args.noise, args.seed, config)
                    cfg = dataclasses.replace(config, ray=dataclasses.replace(config.ray, actors=actors))
                    start = time.perf_counter()
                    pool = start_fitters(fitted, cfg)
                    solution = solve_field(
                        fitted, cfg, ray_mapper(pool, cfg, progress=False), ray_shards(pool)
                    )
                    seconds = time.perf_counter() - start
                    field = PSFField(solution.psfs, size)
                    row = record(
                        label, (field, target_band(fitted), min(reblur_psnr(field, heldout)), seconds)
                    )
                first = first or row
                row["speedup"] = first["seconds"] / row["seconds"]
                print(f"  {actors} actor(s): {row['speedup']:.2f}x the speed of {args.actors[0]}", flush=True)
    command = "PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/calibrate.py "
    report["command"] = command + " ".join(sys.argv[1:])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    path = write_atomic(args.output, json.dumps(report, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
