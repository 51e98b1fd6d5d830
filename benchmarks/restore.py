"""Restoration benchmark: both networks after a fixed training budget against the identity and the
noise-tuned classical baselines, on whole held-out frames of a realistic lens with realistic noise.

    .venv/bin/python benchmarks/restore.py                  # the CPU budget: 2,000 steps at 96², width 16
    .venv/bin/python benchmarks/restore.py --steps 200      # a quick run
    .venv/bin/python benchmarks/restore.py --recipe paper   # the reference's sizes (a GPU run)

Training frames are 256x384 cuts of scikit-image's sample images (other scenes than the held-out
ones) and as many dead-leaves frames (``degtrans.simulate.deadleaves``, ``--dead-leaves``),
simulated by ``degtrans simulate``'s own writer through the lens preset's PSF field and camera
profile (Brooks et al.'s noise range, clean labels without demosaicking). Held out: the four bundled
photographs, simulated as whole frames and restored whole (networks tile by tile with their true
sensor coordinates; Wiener and RL per tile with each frame's noise level, their settings tuned on
whole training frames first: the baselines at their best for the lens). Prints PSNR/SSIM overall
and per field zone, writes benchmarks/results/restore.json and restore_crops.png (corner and centre
crops).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from degtrans.atomic import write_atomic
from degtrans.config import ConfigError, RestoreConfig, SimulateConfig
from degtrans.io import read_image
from degtrans.restore.bench import (
    FRAME,
    NETWORK_LABELS,
    RECIPES,
    held_out_photographs,
    recipe_configs,
    train_for,
    training_frames,
)
from degtrans.restore.data import PairReader
from degtrans.restore.evaluate import ZONES, evaluate_frames, frame_restorers, simulate_frame, tune_baselines
from degtrans.simulate.camera import load_profile
from degtrans.simulate.dataset import build_dataset
from degtrans.simulate.deadleaves import write_dead_leaves
from degtrans.simulate.optics import PRESET_PROFILES, lens_field
from degtrans.simulate.sources import list_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps per network")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    parser.add_argument("--preset", default="triplet", help="lens preset (realistic, centred)")
    parser.add_argument("--psf-size", type=int, default=31, help="k (the triplet needs 31)")
    parser.add_argument("--patches-per-image", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--frame-overlap", type=float, default=0.0,
                        help="overlap of the training frames cut from a source, in frames")  # fmt: skip
    parser.add_argument("--train-images", type=Path, default=None,
                        help="folder of training photographs (DIV2K, ...) for the sample images")  # fmt: skip
    parser.add_argument("--dead-leaves", type=int, default=38, help="dead-leaves training frames added")
    parser.add_argument("--texture", type=float, default=0.0, help="fraction of textured dead-leaves discs")
    parser.add_argument("--keep", type=Path, default=None, help="keep the trained checkpoints in this folder")
    parser.add_argument("--eval-every", type=int, default=500, help="held-out PSNR every N steps (0: end)")
    parser.add_argument("--tuning-frames", type=int, default=6, help="training frames tuning the baselines")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="fovkpn,wiener", help="comma-separated networks to train")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="also score each network with restore.self_ensemble (4x the time)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="train.KEY for every network over the recipe's (typed; repeatable)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "restore.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.recipe]
    sim = SimulateConfig(patch_size=recipe["patch"], patches_per_image=args.patches_per_image,
                         clean_cfa=False, rows_per_file=256)  # fmt: skip
    restore_config = RestoreConfig(tile_size=128, overlap=16, max_tiles_in_memory=8)
    try:
        models = recipe_configs(recipe, args.models.split(","), args.device != "cpu", args.set)
    except ConfigError as error:
        parser.error(str(error))
    sources = None
    if args.train_images is not None:
        try:
            sources = [p for p in list_images(args.train_images) if p.suffix.lower() != ".parquet"]
        except ValueError as error:
            parser.error(str(error))
        held_out_names = {p.stem for p in held_out_photographs()}
        if not sources:
            parser.error(f"--train-images {args.train_images}: no image files there")
        if clash := sorted({p.stem for p in sources} & held_out_names):
            parser.error(f"--train-images {args.train_images}: {clash} are the held-out frames")
    field = lens_field((4, 6), args.psf_size, FRAME, args.preset, camera="cam")
    profile = load_profile(PRESET_PROFILES.get(args.preset, "canon-eos-5d-mark-ii"))
    results: dict = {
        "command": "benchmarks/restore.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "output"),
        "machine": platform.processor() or platform.machine(), "threads": args.threads, "device": args.device,
        "preset": args.preset, "steps": args.steps, "recipe": recipe,
        "models": {k: dataclasses.asdict(v) for k, v in models.items()},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        field_path = field.save(tmp / "cam.npz")
        photos = training_frames(tmp / "frames", args.frame_overlap, sources)
        # Dead-leaves frames: whites, blacks and saturated colours that the sample images lack.
        leaves = write_dead_leaves(tmp / "deadleaves", args.dead_leaves, FRAME, seed=0, texture=args.texture)
        frames = photos + leaves
        start = time.perf_counter()
        summary = build_dataset(frames, [field_path], tmp / "data", sim, profiles=[profile.name])
        results["dataset"] = {"frames": len(frames), "pairs": summary["pairs"],
                              "seconds": time.perf_counter() - start}  # fmt: skip
        reader = PairReader(tmp / "data", val_fraction=0.0, with_psf=True)
        held_out = [
            simulate_frame(read_image(p), p.stem, "cam", field, profile, sim) for p in held_out_photographs()
        ]

        def score(checkpoint: Path) -> dict:
            restorer = frame_restorers([f"ckpt:{checkpoint}"], {"cam": field}, restore_config, args.device)
            # Zone "all" of each frame alone, then their mean (as the final table).
            rows = [evaluate_frames([f], restorer, None, progress=False)[0] for f in held_out]
            per_frame = {f.name: round(r["psnr"], 3) for f, r in zip(held_out, rows, strict=True)}
            return {"psnr": float(np.mean([r["psnr"] for r in rows])),
                    "ssim": float(np.mean([r["ssim"] for r in rows])), "frames": per_frame}  # fmt: skip

        keep = args.keep or tmp
        keep.mkdir(parents=True, exist_ok=True)
        trained = {name: train_for(config, reader, args.steps, keep / f"{name}.pt", args.device,
                                   args.eval_every, score)
                   for name, config in models.items()}  # fmt: skip
        results["training"] = {k: {"seconds": v["seconds"], "patches_per_s": v["patches_per_s"],
                                    "held_out_curve": v["curve"]} for k, v in trained.items()}  # fmt: skip
        # The classical baselines at their best for this lens: tuned on training photographs (the dead
        # leaves would pick a heavier regularisation than photographs want), not on held-out frames.
        every = max(1, len(photos) // args.tuning_frames)
        tuning = [simulate_frame(read_image(p), p.stem, "cam", field, profile, sim)
                  for p in photos[::every][: args.tuning_frames]]  # fmt: skip
        start = time.perf_counter()
        restore_config, trials = tune_baselines(tuning, {"cam": field}, restore_config)
        tuning_seconds = time.perf_counter() - start
        # A check on that protocol: the Wiener filter's best single setting for the held-out frames
        # themselves (chosen with their truth, so not a fair baseline, but an upper bound for any rule).
        best_config, best_trials = tune_baselines(held_out, {"cam": field}, restore_config, rl_grid=None)
        keys = ("discrepancy", "wiener_min_lambda", "rl_discrepancy")
        results["baseline_tuning"] = {
            "frames": [f.name for f in tuning], "seconds": tuning_seconds, "trials": trials,
            "chosen": {k: getattr(restore_config, k) for k in keys},
            "held_out_best": {k: getattr(best_config, k) for k in keys[:2]}, "held_out_trials": best_trials,
        }  # fmt: skip
        methods = ["identity", "wiener", "rl", *(f"ckpt:{v['checkpoint']}" for v in trained.values())]
        restorers = frame_restorers(methods, {"cam": field}, restore_config, args.device)
        networks = [NETWORK_LABELS[m] for m in trained]
        labels = dict(zip(restorers, ["identity", "wiener", "rl", *networks], strict=True))
        restorers = {labels[k]: v for k, v in restorers.items()}
        best = frame_restorers(["wiener"], {"cam": field}, best_config, args.device)
        restorers["wiener-best"] = best["wiener"]
        if args.self_ensemble:
            flips = dataclasses.replace(restore_config, self_ensemble=True)
            for name, value in trained.items():
                ensembled = frame_restorers(
                    [f"ckpt:{value['checkpoint']}"], {"cam": field}, flips, args.device
                )
                restorers[f"{NETWORK_LABELS[name]}+flips"] = next(iter(ensembled.values()))
        png = args.output.with_name("restore_crops.png")
        start = time.perf_counter()
        rows = evaluate_frames(held_out, restorers, png, progress=False)
        results["evaluate_seconds"] = time.perf_counter() - start
    results["frames"] = [{"name": f.name, "noise_shot": f.noise.shot, "noise_read": f.noise.read}
                         for f in held_out]  # fmt: skip
    results["rows"] = rows
    base = {r["zone"]: r["psnr"] for r in rows if r["method"] == "identity"}
    budget = f"{args.steps} steps of {recipe['batch']}x{recipe['patch']}²"
    print(f"{args.preset}, {len(held_out)} held-out {FRAME[0]}x{FRAME[1]} frames; {budget} "
          f"on {args.device} ({args.threads} threads)")  # fmt: skip
    column = max(12, *(len(m) + 1 for m in restorers))
    print(f"{'method':<{column}}" + "".join(f"{z:>22}" for z in ZONES) + "    gain (all)")
    for method in restorers:
        cells = {r["zone"]: r for r in rows if r["method"] == method}
        line = "".join(f"{cells[z]['psnr']:>12.2f} dB {cells[z]['ssim']:.3f}" for z in ZONES)
        print(f"{method:<{column}}{line}    {cells['all']['psnr'] - base['all']:+.2f} dB")
    print(f"baselines tuned on {len(results['baseline_tuning']['frames'])} training frames: "
          f"{results['baseline_tuning']['chosen']}; wiener-best: the Wiener filter's best setting for the "
          f"held-out frames themselves, {results['baseline_tuning']['held_out_best']}")  # fmt: skip
    for name, stats in results["training"].items():
        print(f"  {name}: {stats['patches_per_s']:.1f} patches/s, {stats['seconds']:.0f} s")
    write_atomic(args.output, json.dumps(results, indent=2))
    print(f"wrote {args.output} and {png}")


if __name__ == "__main__":
    main()
