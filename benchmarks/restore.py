"""Restoration benchmark: both networks after a fixed training budget against the identity and the
noise-tuned classical baselines, on whole held-out frames of a realistic lens with realistic noise.

    .venv/bin/python benchmarks/restore.py                          # the CPU budget: 2,000 steps
    .venv/bin/python benchmarks/restore.py --steps 200              # a quick run
    .venv/bin/python benchmarks/restore.py --recipe gpu --time-budget 150   # one device call (GPU)
    .venv/bin/python benchmarks/restore.py --combine A.json B.json  # two seeds: mean and spread

Training frames are cut from the photograph set's ``train`` split (``degtrans simulate make-photos``,
``--photos``) at several scales (``--scales``: the photograph as stored, at half size, and its whole
scene in one frame), each also mirrored (``--flips``: the scene is mirrored *before* it is simulated,
so the sensor coordinates and PSFs stay true), plus dead-leaves frames (``--dead-leaves``), all
simulated by ``degtrans simulate``'s own writer through the lens preset's PSF field and camera
profile (Brooks et al.'s noise range, clean labels without demosaicking).

Held out: the four bundled photographs and the photograph set's ``heldout`` split (16 scenes from
three packages, never trained on), each as one whole 256x384 frame (the whole scene, area-averaged),
restored whole (networks tile by tile with their true sensor coordinates; Wiener and RL per tile with
each frame's noise level, their settings tuned first on whole *training* photographs: the baselines at
their best for the lens). Prints PSNR/SSIM overall, per field zone and per frame, writes
benchmarks/results/restore.json and restore_crops.png (corner and centre crops).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from degtrans.atomic import write_atomic
from degtrans.config import ConfigError, RestoreConfig, SimulateConfig, preset_config
from degtrans.io import read_image
from degtrans.restore.bench import (
    FRAME,
    LABELS,
    InMemoryPairs,
    held_out_images,
    pool_map,
    preset_configs,
    train_for,
    training_frames,
)
from degtrans.restore.data import PairReader
from degtrans.restore.evaluate import ZONES, evaluate_frames, frame_restorers, simulate_frame, tune_baselines
from degtrans.restore.pretrained import pretrained_path
from degtrans.simulate.camera import load_profile
from degtrans.simulate.dataset import build_dataset
from degtrans.simulate.deadleaves import write_dead_leaves
from degtrans.simulate.optics import PRESET_PROFILES, lens_field
from degtrans.simulate.photoset import cover_crop, default_photos, photo_paths
from degtrans.simulate.sources import list_images

# The flags the pairs depend on (a --work folder is reused by runs that agree on them).
DATA_ARGS = (
    "preset",
    "psf_size",
    "patches_per_image",
    "photos",
    "train_images",
    "scales",
    "flips",
    "frame_overlap",
    "dead_leaves",
    "texture",
)
# What each network must gain over the tuned Wiener filter (issue 21: the CPU budget; the bundled
# pretrained deep Wiener, on a lens it never saw, scored with --checkpoint pretrained).
BARS = {"deep-wiener": 2.0, "fovkpn": 1.0, "pretrained": 1.5}


# ---------------------------------------------------------------- reporting


def per_frame(rows: list[dict]) -> dict[str, dict[str, float]]:
    """``{method: {frame: PSNR}}`` of the zone "all" rows (frame names without their camera)."""
    return {
        r["method"]: {k.split("/", 1)[-1]: v[0] for k, v in r["frames"].items()}
        for r in rows
        if r["zone"] == "all"
    }


def frame_table(frames: dict[str, dict[str, float]]) -> str:
    """One line per frame: its PSNR for every method."""
    methods = list(frames)
    names = list(frames[methods[0]])
    width = max(12, *(len(n) + 1 for n in names))
    lines = [f"{'frame':<{width}}" + "".join(f"{m:>14}" for m in methods)]
    for name in names:
        lines.append(f"{name:<{width}}" + "".join(f"{frames[m][name]:>14.2f}" for m in methods))
    lines.append(
        f"{'mean':<{width}}" + "".join(f"{np.mean(list(frames[m].values())):>14.2f}" for m in methods)
    )
    return "\n".join(lines)


def bar_lines(means: dict[str, float]) -> list[str]:
    """Each network's gain over the tuned Wiener filter against its bar."""
    lines = []
    for method, bar in BARS.items():
        if method in means and "wiener" in means:
            gain = means[method] - means["wiener"]
            verdict = "met" if gain >= bar else "not met"
            lines.append(f"{method} - tuned wiener: {gain:+.2f} dB (bar +{bar:.1f}: {verdict})")
    return lines


def combine(paths: Sequence[Path], output: Path) -> dict:
    """Mean and spread over runs (seeds) of the same protocol: per method and per frame."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    tables = [per_frame(run["rows"]) for run in runs]
    methods = [m for m in tables[0] if all(m in t for t in tables)]
    means = {m: [float(np.mean(list(t[m].values()))) for t in tables] for m in methods}
    frames = {
        m: {name: float(np.mean([t[m][name] for t in tables])) for name in tables[0][m]} for m in methods
    }
    print(f"{len(runs)} runs: " + ", ".join(str(p) for p in paths))
    print(
        f"{'method':<16}"
        + "".join(f"{f'run {i}':>10}" for i in range(len(runs)))
        + f"{'mean':>10}{'spread':>10}"
    )
    for m in methods:
        cells = "".join(f"{v:>10.2f}" for v in means[m])
        print(f"{m:<16}{cells}{np.mean(means[m]):>10.2f}{max(means[m]) - min(means[m]):>10.2f}")
    print()
    print(frame_table(frames))
    mean_of = {m: float(np.mean(v)) for m, v in means.items()}
    for line in bar_lines(mean_of):
        print(line)
    result = {
        "runs": [str(p) for p in paths],
        "means": means,
        "mean": mean_of,
        "spread": {m: max(v) - min(v) for m, v in means.items()},
        "frames": frames,
    }
    write_atomic(output, json.dumps(result, indent=2))
    print(f"wrote {output}")
    return result


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps per network (most)")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=0.0,
        help="seconds of training per network, 0: none (the GPU recipe's limit)",
    )
    parser.add_argument("--recipe", choices=["cpu", "gpu", "reference"], default="cpu",
                        help="the training preset bench-RECIPE (config.PRESETS)")  # fmt: skip
    parser.add_argument("--preset", default="triplet", help="lens preset (realistic, centred)")
    parser.add_argument("--psf-size", type=int, default=31, help="k (the triplet needs 31)")
    parser.add_argument("--patches-per-image", type=int, default=16, help="patches per training frame")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--workers", type=int, default=1, help="processes writing the dataset's shards")
    parser.add_argument(
        "--photos",
        type=Path,
        default=None,
        help="the photograph set (default $DEGTRANS_PHOTOS or ~/.cache/degtrans/photos)",
    )
    parser.add_argument(
        "--train-images",
        type=Path,
        default=None,
        help="train on this folder of photographs instead of the set's train split",
    )
    parser.add_argument(
        "--scales",
        default="1,0.5,fit",
        help="scales the training photographs are cut at (factors, or fit: the whole scene)",
    )
    parser.add_argument(
        "--flips",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train on each photograph's mirror image (mirrored before simulation)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep the training frames and pairs here and reuse them (default: a temporary folder)",
    )
    parser.add_argument(
        "--curve-only",
        action="store_true",
        help="stop after training: the networks' held-out curves only (no baselines; experiments)",
    )
    parser.add_argument("--frame-overlap", type=float, default=0.0, help="overlap of cut frames, in frames")
    parser.add_argument("--dead-leaves", type=int, default=150, help="dead-leaves training frames added")
    parser.add_argument("--texture", type=float, default=0.0, help="fraction of textured dead-leaves discs")
    parser.add_argument("--keep", type=Path, default=None, help="keep the trained checkpoints in this folder")
    parser.add_argument("--eval-every", type=int, default=500, help="held-out PSNR every N steps (0: end)")
    parser.add_argument(
        "--tuning-frames", type=int, default=6, help="training photographs tuning the baselines"
    )
    parser.add_argument(
        "--wiener-best",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score the Wiener filter at its best setting for the held-out frames",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--decode-once",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode every pair once onto the device (default: on a GPU)",
    )
    parser.add_argument("--models", default="fovkpn,wiener", help="comma-separated networks to train")
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="PATH",
        help="score this checkpoint instead of training ('pretrained': the bundled deep Wiener), also "
        "as a photograph (no ISP draw, no noise level); repeatable",
    )
    parser.add_argument(
        "--self-ensemble",
        action="store_true",
        help="also score each network with restore.self_ensemble (4x the time)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="train.KEY for every network over the recipe's (typed; repeatable)",
    )
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        default=None,
        metavar="RUN.json",
        help="print the mean and spread of finished runs (seeds) and exit",
    )
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "restore.json")
    args = parser.parse_args()
    if args.combine:
        combine(args.combine, args.output)
        return
    torch.set_num_threads(args.threads)
    preset = f"bench-{args.recipe}"
    patch = preset_config(preset).simulate.patch_size
    sim = SimulateConfig(
        patch_size=patch,
        patches_per_image=args.patches_per_image,
        clean_cfa=False,
        rows_per_file=256,
    )
    restore_config = RestoreConfig(tile_size=128, overlap=16, max_tiles_in_memory=8)
    try:
        models = preset_configs(preset, args.models.split(","), args.device != "cpu", args.set)
    except ConfigError as error:
        parser.error(str(error))
    if args.checkpoint:
        models = {}
    scales = [s.strip() for s in args.scales.split(",") if s.strip()]
    if bad := [s for s in scales if s != "fit" and not 0 < float(s) <= 1]:
        parser.error(f"--scales: {bad[0]!r} is neither a factor in (0, 1] nor 'fit'")
    photos = args.photos or default_photos()
    try:
        held_out_sources = held_out_images(photos)
        if args.train_images is not None:
            sources = [p for p in list_images(args.train_images) if p.suffix.lower() != ".parquet"]
        else:
            sources = photo_paths(photos, "train")
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    if clash := sorted({p.stem for p in sources} & {name for name, _ in held_out_sources}):
        parser.error(f"training images {clash} are held-out frames")
    field = lens_field((4, 6), args.psf_size, FRAME, args.preset, camera="cam")
    profile = load_profile(PRESET_PROFILES.get(args.preset, "canon-eos-5d-mark-ii"))
    results: dict[str, Any] = {
        "command": " ".join(["benchmarks/restore.py", *sys.argv[1:]]),
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "device": args.device,
        "preset": args.preset,
        "steps": args.steps,
        "train_preset": preset,
        "models": {k: dataclasses.asdict(v) for k, v in models.items()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        work = args.work or tmp
        # What the pairs depend on: a --work folder is reused only by runs that agree on all of it.
        data_args = {k: str(getattr(args, k)) for k in DATA_ARGS} | {"patch": patch}
        if args.work is not None and (work / "data-args.json").exists():
            if json.loads((work / "data-args.json").read_text()) != data_args:
                parser.error(f"--work {work}: made with other data settings ({work / 'data-args.json'})")
        write_atomic(work / "data-args.json", json.dumps(data_args, indent=2))
        field_path = field.save(tmp / "cam.npz")
        pairs = None
        if not args.checkpoint:  # scoring given checkpoints needs no training data
            start = time.perf_counter()
            photo_frames = training_frames(work / "frames", sources, scales, args.frame_overlap, args.flips)
            # Dead-leaves frames: whites, blacks, saturated colours and sharp edges at every scale.
            leaves = write_dead_leaves(
                work / "deadleaves", args.dead_leaves, FRAME, seed=0, texture=args.texture
            )
            frames = photo_frames + leaves
            map_shards = pool_map(args.workers) if args.workers > 1 else None
            summary = build_dataset(
                frames,
                [field_path],
                work / "data",
                sim,
                profiles=[profile.name],
                **({"map_shards": map_shards} if map_shards else {}),
            )
            decode_once = args.device != "cpu" if args.decode_once is None else args.decode_once
            pairs = InMemoryPairs(
                PairReader(work / "data", val_fraction=0.0, with_psf=True), args.device, decode_once
            )
            results["dataset"] = {
                "sources": len(sources),
                "photo_frames": len(photo_frames),
                "dead_leaves": len(leaves),
                "pairs": summary["pairs"],
                "seconds": time.perf_counter() - start,
            }
            print(
                f"dataset: {len(sources)} photographs -> {len(photo_frames)} frames + {len(leaves)} "
                f"dead leaves, {summary['pairs']} pairs ({results['dataset']['seconds']:.0f} s)",
                flush=True,
            )
        held_out = [
            simulate_frame(image, name, "cam", field, profile, sim) for name, image in held_out_sources
        ]

        def score(checkpoint: Path) -> dict:
            restorer = frame_restorers([f"ckpt:{checkpoint}"], {"cam": field}, restore_config, args.device)
            rows = evaluate_frames(held_out, restorer, None, progress=False)
            return {
                "psnr": rows[0]["psnr"],
                "ssim": rows[0]["ssim"],
                "frames": per_frame(rows[:1]).popitem()[1],
            }

        keep = args.keep or tmp
        keep.mkdir(parents=True, exist_ok=True)
        trained = {}
        for name, config in models.items():
            trained[name] = train_for(
                config,
                pairs,
                args.steps,
                keep / f"{name}.pt",
                args.device,
                args.eval_every,
                score,
                args.time_budget,
            )
            print(
                f"  {name}: {trained[name]['steps']} steps, {trained[name]['patches_per_s']:.1f} patches/s, "
                f"{trained[name]['seconds']:.0f} s",
                flush=True,
            )
        results["training"] = {
            k: {
                "seconds": v["seconds"],
                "steps": v["steps"],
                "patches_per_s": v["patches_per_s"],
                "held_out_curve": v["curve"],
            }
            for k, v in trained.items()
        }
        del pairs
        if args.curve_only:
            write_atomic(args.output, json.dumps(results, indent=2))
            for name, value in trained.items():
                curve = ", ".join(f"{c['step']}: {c['psnr']:.2f}" for c in value["curve"])
                print(f"{name} held-out PSNR by step: {curve}")
            print(f"wrote {args.output}")
            return
        # The classical baselines at their best for this lens: tuned on the whole scenes of training
        # photographs (like the held-out frames; dead leaves would pick a heavier regularisation than
        # photographs want), never on held-out frames.
        every = max(1, len(sources) // args.tuning_frames)
        tuning = [
            simulate_frame(cover_crop(read_image(p), FRAME), p.stem, "cam", field, profile, sim)
            for p in sources[::every][: args.tuning_frames]
        ]
        start = time.perf_counter()
        restore_config, trials = tune_baselines(tuning, {"cam": field}, restore_config)
        keys = ("discrepancy", "wiener_min_lambda", "rl_discrepancy")
        results["baseline_tuning"] = {
            "frames": [f.name for f in tuning],
            "seconds": time.perf_counter() - start,
            "trials": trials,
            "chosen": {k: getattr(restore_config, k) for k in keys},
        }
        print(
            f"baselines tuned on {len(tuning)} training photographs: "
            f"{results['baseline_tuning']['chosen']} ({results['baseline_tuning']['seconds']:.0f} s)",
            flush=True,
        )
        methods = ["identity", "wiener", "rl", *(f"ckpt:{v['checkpoint']}" for v in trained.values())]
        restorers = frame_restorers(methods, {"cam": field}, restore_config, args.device)
        labels = dict(
            zip(restorers, ["identity", "wiener", "rl", *(LABELS[m] for m in trained)], strict=True)
        )
        restorers = {labels[k]: v for k, v in restorers.items()}
        for path in args.checkpoint:
            label = "pretrained" if path == "pretrained" else Path(path).stem
            path = str(pretrained_path()) if path == "pretrained" else path
            for side_info, suffix in ((True, ""), (False, " as photo")):
                scored = frame_restorers(
                    [f"ckpt:{path}"], {"cam": field}, restore_config, args.device, side_info
                )
                restorers[label + suffix] = next(iter(scored.values()))
        if args.wiener_best:
            # A check on the protocol: the Wiener filter's best single setting for the held-out frames
            # themselves (chosen with their truth: not a fair baseline, an upper bound for any rule).
            best_config, best_trials = tune_baselines(held_out, {"cam": field}, restore_config, rl_grid=None)
            results["baseline_tuning"]["held_out_best"] = {k: getattr(best_config, k) for k in keys[:2]}
            results["baseline_tuning"]["held_out_trials"] = best_trials
            restorers["wiener-best"] = frame_restorers(["wiener"], {"cam": field}, best_config, args.device)[
                "wiener"
            ]
        if args.self_ensemble:
            flips = dataclasses.replace(restore_config, self_ensemble=True)
            for name, value in trained.items():
                ensembled = frame_restorers(
                    [f"ckpt:{value['checkpoint']}"], {"cam": field}, flips, args.device
                )
                restorers[f"{LABELS[name]}+flips"] = next(iter(ensembled.values()))
        png = args.output.with_name(args.output.stem + "_crops.png")
        start = time.perf_counter()
        rows = evaluate_frames(held_out, restorers, png, progress=False)
        results["evaluate_seconds"] = time.perf_counter() - start
    results["frames"] = [
        {"name": f.name, "noise_shot": f.noise.shot, "noise_read": f.noise.read} for f in held_out
    ]
    results["rows"] = rows
    write_atomic(args.output, json.dumps(results, indent=2))
    base = {r["zone"]: r["psnr"] for r in rows if r["method"] == "identity"}
    steps_done = ", ".join(f"{k} {v['steps']}" for k, v in trained.items())
    batch = preset_config(preset).train.batch_size
    budget = f"{steps_done} steps of {batch}x{patch}²"
    print(
        f"{args.preset}, {len(held_out)} held-out {FRAME[0]}x{FRAME[1]} frames; {budget} "
        f"on {args.device} ({args.threads} threads)"
    )
    column = max(12, *(len(m) + 1 for m in restorers))
    print(f"{'method':<{column}}" + "".join(f"{z:>22}" for z in ZONES) + "    gain (all)")
    for method in restorers:
        cells = {r["zone"]: r for r in rows if r["method"] == method}
        line = "".join(f"{cells[z]['psnr']:>12.2f} dB {cells[z]['ssim']:.3f}" for z in ZONES)
        print(f"{method:<{column}}{line}    {cells['all']['psnr'] - base['all']:+.2f} dB")
    print()
    print(frame_table(per_frame(rows)))
    for line in bar_lines({r["method"]: r["psnr"] for r in rows if r["zone"] == "all"}):
        print(line)
    print(
        f"baselines tuned on {len(tuning)} training photographs: {results['baseline_tuning']['chosen']}"
        + (
            f"; wiener-best: the Wiener filter's best setting for the held-out frames themselves, "
            f"{results['baseline_tuning']['held_out_best']}"
            if args.wiener_best
            else ""
        )
    )
    print(f"wrote {args.output} and {png}")


if __name__ == "__main__":
    main()
