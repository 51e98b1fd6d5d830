"""Pretrain the bundled deep Wiener network: one non-blind model for any calibrated lens.

    .venv/bin/python benchmarks/pretrain.py                     # the CPU recipe (resumable: rerun to go on)
    .venv/bin/python benchmarks/pretrain.py --export degtrans/data/models/deep-wiener.pt
    PYTHONPATH=$PWD python3 benchmarks/pretrain.py --device cuda --recipe gpu --work $OUT/work \\
        --photos PHOTOS --time-limit 420 --export $OUT/deep-wiener.pt   # one device call

Deep Wiener is given the PSFs, so it does not learn one lens: it learns to deconvolve with whatever
PSFs it is given. It is trained here on a catalogue of seeded random lenses
(``degtrans.simulate.catalogue.write_random_cameras``, the family ``random_lens`` spans; every pair
draws one) and on the training photographs of ``degtrans simulate make-photos`` cut into 256x384
sensor frames as ``benchmarks/restore.py`` cuts them (at full and half size and the whole scene, each
also mirrored), plus dead-leaves frames; simulated by ``degtrans simulate``'s own writer (Brooks et al.'s
noise range, clean labels without demosaicking). Each batch drops the pairs' ISP draw and noise level
with probability ``--side-info-dropout``, so that one model restores simulated and RAW frames (given
both) and sRGB photographs (given neither: sRGB curve undone, noise estimated).

Everything lives in ``--work``: ``lenses/`` (fields and ``cameras.toml``), ``frames/``, ``deadleaves/``,
``data/`` (the pair dataset), ``run/`` (``last.pt`` every ``--save-every`` steps with the optimizer,
schedule, weight average and step; ``log.jsonl``). Each phase skips what is already there, so a rerun
of the same command resumes where the last one stopped, on the same batches. ``--export`` writes the
weight average in float16 with its config and provenance: the file ``degtrans restore --field`` and the
demo load (``degtrans.restore.pretrained``). Ray is not used (the device image has none).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from degtrans.config import SimulateConfig, TrainConfig
from degtrans.restore.bench import FRAME, pool_map, training_frames  # the restoration benchmark's frames
from degtrans.restore.checkpoint import load_checkpoint, save_checkpoint
from degtrans.restore.data import PairReader
from degtrans.restore.loop import make_optimizer, train_epoch
from degtrans.restore.models import build_model
from degtrans.restore.pretrained import export_pretrained
from degtrans.restore.recipe import WeightEMA, make_scheduler
from degtrans.simulate.catalogue import write_random_cameras
from degtrans.simulate.dataset import build_dataset
from degtrans.simulate.deadleaves import write_dead_leaves
from degtrans.simulate.photoset import photo_paths

RECIPES = {
    # The CPU recipe: the restoration benchmark's deep Wiener (width 16, 12 features, 3 stages, 96²,
    # batch 8, AdamW 1e-3 with warmup, cosine, EMA), for more steps.
    "cpu": {"patch": 96, "batch": 8, "width": 16, "features": 12, "stages": 3, "lr": 1e-3, "warmup": 100,
            "ema": 0.995, "steps": 4000, "patches_per_image": 24},
    # One device call (unmeasured: no GPU has run it). The same network with larger batches and patches;
    # the steps assume ~500 patches/s for 3 stages (1,089 were measured for 1 stage at 128², batch 16).
    "gpu": {"patch": 128, "batch": 16, "width": 16, "features": 12, "stages": 3, "lr": 1e-3, "warmup": 200,
            "ema": 0.998, "steps": 8000, "patches_per_image": 64},
}  # fmt: skip


def prepare(args: argparse.Namespace, recipe: dict) -> tuple[Path, dict]:
    """The lens catalogue, the frames and the pair dataset under ``args.work`` (each kept when there);
    returns the dataset's folder and the frame counts."""
    work = args.work
    start = time.perf_counter()
    lenses = work / "lenses"
    write_random_cameras(lenses, args.lenses, args.lens_seed, args.grid, args.psf_size, FRAME,
                         workers=args.workers)  # fmt: skip
    if args.frames is not None:  # frames cut beforehand (carried to a machine without the photographs)
        frames = sorted(args.frames.glob("*.png"))
    elif args.photos_frames:
        scales = [x.strip() for x in args.scales.split(",") if x.strip()]
        frames = training_frames(work / "frames", photo_paths(args.photos, "train"), scales, 0.0, args.flips)
    else:
        frames = []
    counts = {"photograph frames": len(frames), "dead leaves": args.dead_leaves}
    frames += write_dead_leaves(work / "deadleaves", args.dead_leaves, FRAME, seed=args.seed)
    patches = args.patches_per_image or recipe["patches_per_image"]
    sim = SimulateConfig(patch_size=recipe["patch"], patches_per_image=patches,
                         clean_cfa=False, rows_per_file=64, seed=args.seed, camera_choice="draw")  # fmt: skip
    summary = build_dataset(frames, None, work / "data", sim, catalogue=lenses,
                            map_shards=pool_map(args.workers))  # fmt: skip
    print(f"data: {len(frames)} frames, {summary['pairs']} pairs, {args.lenses} lenses "
          f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
    return work / "data", counts


def drop_side_info(batch: dict, probability: float, generator: torch.Generator) -> dict:
    """The batch without its ISP draw and noise level with ``probability`` (as an sRGB photograph)."""
    if probability > 0 and float(torch.rand((), generator=generator)) < probability:
        return {k: v for k, v in batch.items() if k not in ("isp", "noise")}
    return batch


def train(args: argparse.Namespace, recipe: dict, data: Path) -> tuple[torch.nn.Module, TrainConfig, dict]:
    """Train for ``args.steps`` steps from ``run/last.pt`` when there; returns the EMA model and config."""
    run = args.work / "run"
    run.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(
        model="wiener", width=recipe["width"], wiener_features=recipe["features"],
        wiener_stages=recipe["stages"], batch_size=recipe["batch"], learning_rate=recipe["lr"],
        warmup_steps=recipe["warmup"], lr_schedule="cosine", ema_decay=recipe["ema"], seed=args.seed,
        amp=args.device != "cpu", val_fraction=0.0,
    )  # fmt: skip
    device = torch.device(args.device)
    model = build_model(config).to(device)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, dataclasses.replace(config, epochs=1), args.steps)
    ema = WeightEMA(model, config.ema_decay)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    done, seconds = 0, 0.0
    last = run / "last.pt"
    if last.exists():
        state = load_checkpoint(last, model, optimizer, scheduler, map_location=device)
        ema.load_state_dict(state["extra"]["ema"])
        done, seconds = state["extra"]["step"], state["extra"]["seconds"]
        if state["extra"]["steps"] != args.steps or state["train_config"] != config:
            raise SystemExit(f"{last}: a run of another recipe or --steps; use a new --work")
        print(f"resuming {last} at step {done}", flush=True)
    reader = PairReader(data, val_fraction=0.0, with_psf=True)
    per_epoch = reader.steps_per_epoch(config.batch_size, "all", drop_last=True)

    def stream() -> Iterator[dict]:  # the same batches as an uninterrupted run, from step ``done``
        for epoch in itertools.count(done // per_epoch):
            batches = reader.batches("all", config.batch_size, seed=config.seed, epoch=epoch, drop_last=True,
                                     shuffle_buffer=512)  # fmt: skip
            skip = done % per_epoch if epoch == done // per_epoch else 0
            first = epoch * per_epoch + skip
            for step, batch in enumerate(itertools.islice(batches, skip, None), start=first):
                generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
                yield drop_side_info(batch, args.side_info_dropout, generator)

    batches = stream()
    began = time.perf_counter()
    while done < args.steps:
        chunk = min(args.save_every, args.steps - done)
        stats = train_epoch(model, itertools.islice(batches, chunk), optimizer, scheduler=scheduler,
                            scaler=scaler, grad_clip=config.grad_clip, amp=config.amp, ema=ema)  # fmt: skip
        if not math.isfinite(stats["loss"]):  # keep the last good checkpoint rather than NaN weights
            raise SystemExit(f"non-finite loss in steps {done}-{done + chunk}: {last} keeps step {done}")
        done += stats["steps"]
        seconds += stats["seconds"]
        extra = {"step": done, "steps": args.steps, "seconds": seconds, "ema": ema.state_dict()}
        save_checkpoint(last, model, optimizer, scheduler, 0, config, extra)
        if args.snapshot_every and done % args.snapshot_every == 0:  # the curve, scored afterwards
            save_checkpoint(run / f"step-{done:06d}.pt", ema.module, None, None, 0, config)
        record = {"step": done, "loss": stats["loss"], "patches_per_s": stats["patches_per_s"],
                  "lr": optimizer.param_groups[0]["lr"], "seconds": seconds}  # fmt: skip
        with open(run / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        print(f"step {done}/{args.steps}: loss {stats['loss']:.4f}, {stats['patches_per_s']:.1f} patches/s, "
              f"{seconds:.0f} s", flush=True)  # fmt: skip
        if args.time_limit and time.perf_counter() - began > args.time_limit:
            print(f"time limit ({args.time_limit} s) reached at step {done}", flush=True)
            break
    info = {"steps": done, "planned_steps": args.steps, "train_seconds": round(seconds),
            "patches_per_s": done * config.batch_size / max(seconds, 1e-9)}  # fmt: skip
    return ema.module, config, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "degtrans" / "pretrain",
                        help="working folder (lenses, frames, data, run): rerun to resume")  # fmt: skip
    parser.add_argument(
        "--photos", type=Path, default=None, help="photograph set (make-photos; default: its default folder)"
    )
    parser.add_argument("--no-photos", dest="photos_frames", action="store_false",
                        help="dead leaves only (where the photograph set is not at hand)")  # fmt: skip
    parser.add_argument("--frames", type=Path, default=None,
                        help="training frames cut beforehand (WORK/frames of another run)")  # fmt: skip
    parser.add_argument("--scales", default="1,0.5,fit",
                        help="scales the photographs are cut at (benchmarks/restore.py's)")  # fmt: skip
    parser.add_argument("--flips", action=argparse.BooleanOptionalAction, default=True,
                        help="also the mirrored photographs (mirrored before simulation)")  # fmt: skip
    parser.add_argument("--lenses", type=int, default=128, help="random lenses in the catalogue")
    parser.add_argument("--lens-seed", type=int, default=0, help="seed of the lens family")
    parser.add_argument("--grid", type=int, nargs=2, default=(4, 6), help="PSF tiles per lens field")
    parser.add_argument("--psf-size", type=int, default=31, help="k")
    parser.add_argument("--dead-leaves", type=int, default=64, help="dead-leaves frames added")
    parser.add_argument("--patches-per-image", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the recipe's)")
    parser.add_argument(
        "--side-info-dropout",
        type=float,
        default=0.5,
        help="probability that a batch is trained without its ISP draw and noise level",
    )
    parser.add_argument("--save-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--snapshot-every", type=int, default=500, help="keep the EMA weights every N steps")
    parser.add_argument("--prepare-only", action="store_true", help="write the lenses, frames and data only")
    parser.add_argument("--time-limit", type=float, default=0.0,
                        help="stop training after this many seconds (0: none), still exporting")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 0)) or None)
    parser.add_argument("--workers", type=int, default=1, help="processes synthesising the dataset")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--export", type=Path, default=None, help="write the bundled weights (fp16) here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = RECIPES[args.recipe]
    args.steps = args.steps or recipe["steps"]
    args.work.mkdir(parents=True, exist_ok=True)
    data, info_frames = prepare(args, recipe)
    if args.prepare_only:
        return
    model, config, info = train(args, recipe, data)
    if args.export is not None:
        provenance = {
            **info, "recipe": args.recipe, "lenses": args.lenses, "lens_seed": args.lens_seed,
            "grid": list(args.grid), "psf_size": args.psf_size, "frame": list(FRAME),
            "frames": info_frames,
            "photos": str(args.frames or ("make-photos train split" if args.photos_frames else "none")),
            "scales": args.scales, "flips": args.flips,
            "dead_leaves": args.dead_leaves,
            "patches_per_image": args.patches_per_image or recipe["patches_per_image"],
            "patch": recipe["patch"], "side_info_dropout": args.side_info_dropout, "seed": args.seed,
            "device": args.device, "machine": platform.processor() or platform.machine(),
            "command": "benchmarks/pretrain.py " + " ".join(sys.argv[1:]),
        }  # fmt: skip
        print(f"wrote {export_pretrained(model, config, args.export, provenance)}")


if __name__ == "__main__":
    main()
