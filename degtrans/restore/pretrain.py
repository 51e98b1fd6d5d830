"""The recipe of the bundled deep Wiener weights: one non-blind model for any calibrated lens.

Deep Wiener is given the PSFs, so it does not learn one lens: it learns to deconvolve with whatever
PSFs it is given. It is trained on a catalogue of seeded random lenses
(``degtrans.simulate.catalogue.write_random_cameras``, the family ``random_lens`` spans; every pair
draws one) and on the training photographs of ``degtrans simulate make-photos`` cut into 256x384
sensor frames as ``benchmarks/restore.py`` cuts them (at full and half size and the whole scene, each
also mirrored), plus dead-leaves frames; simulated by ``degtrans simulate``'s own writer (Brooks et al.'s
noise range, clean labels without demosaicking). Each batch drops the pairs' ISP draw and noise level
with probability ``Schedule.side_info_dropout``, so that one model restores simulated and RAW frames
(given both) and sRGB photographs (given neither: sRGB curve undone, noise estimated).

Everything lives in a work folder: ``lenses/`` (fields and ``cameras.toml``), ``frames/``,
``deadleaves/``, ``data/`` (the pair dataset), ``run/`` (``last.pt`` every ``save_every`` steps with
the optimizer, schedule, weight average and step; ``log.jsonl``). Each phase skips what is already
there, so a rerun resumes where the last one stopped, on the same batches. The export is the weight
average in float16 with its config and provenance (``degtrans.restore.pretrained``). The network and
its optimizer are the ``pretrain-cpu`` / ``pretrain-gpu`` rows of ``config.PRESETS``; ``benchmarks/
pretrain.py`` is the command line.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from degtrans.config import TrainConfig, preset_config
from degtrans.errors import InputError
from degtrans.restore.bench import FRAME, pool_map, training_frames
from degtrans.restore.checkpoint import load_checkpoint, save_checkpoint
from degtrans.restore.data import PairReader
from degtrans.restore.loop import Budget, Progress, append_jsonl, fit, make_optimizer
from degtrans.restore.models import build_model
from degtrans.restore.pretrained import export_pretrained
from degtrans.restore.recipe import WeightEMA, make_scheduler
from degtrans.simulate.catalogue import write_random_cameras
from degtrans.simulate.dataset import build_dataset
from degtrans.simulate.deadleaves import write_dead_leaves
from degtrans.simulate.photoset import photo_paths

# Optimizer steps of each preset's run (the steps of a preset's schedule, which epochs cannot give:
# the stream of batches crosses epochs).
STEPS = {"pretrain-cpu": 4000, "pretrain-gpu": 8000}


@dataclass(frozen=True)
class Catalogue:
    """What the pair dataset is made of: the lens catalogue, the frames and the patches."""

    lenses: int = 128
    lens_seed: int = 0
    grid: tuple[int, int] = (4, 6)
    psf_size: int = 31
    dead_leaves: int = 64
    # The photographs of a make-photos set (``None``: its default folder) at these scales
    # (``bench.source_frames``), mirrored too with ``flips``; or frames cut beforehand (``frames``).
    photos: Path | None = None
    use_photos: bool = True
    frames: Path | None = None
    scales: tuple[str, ...] = ("1", "0.5", "fit")
    flips: bool = True
    patches_per_image: int = 0  # 0: the preset's
    seed: int = 0


@dataclass(frozen=True)
class Schedule:
    """How the run trains: its steps, checkpoints and limits."""

    steps: int = 0  # 0: the preset's (``STEPS``)
    side_info_dropout: float = 0.5
    save_every: int = 100
    snapshot_every: int = 500  # keep the weight average every N steps (the curve, scored afterwards)
    time_limit: float = 0.0  # seconds of this call's training (0: none), still exporting


def prepare(work: Path, catalogue: Catalogue, preset: str, workers: int = 1) -> tuple[Path, dict[str, int]]:
    """The lens catalogue, the frames and the pair dataset under ``work`` (each kept when there);
    returns the dataset's folder and the frame counts."""
    start = time.perf_counter()
    lenses = work / "lenses"
    write_random_cameras(lenses, catalogue.lenses, catalogue.lens_seed, catalogue.grid, catalogue.psf_size,
                         FRAME, workers=workers)  # fmt: skip
    if catalogue.frames is not None:  # frames cut beforehand (carried to a machine without the photographs)
        frames = sorted(catalogue.frames.glob("*.png"))
    elif catalogue.use_photos:
        sources = photo_paths(catalogue.photos, "train")
        frames = training_frames(work / "frames", sources, catalogue.scales, 0.0, catalogue.flips)
    else:
        frames = []
    counts = {"photograph frames": len(frames), "dead leaves": catalogue.dead_leaves}
    frames += write_dead_leaves(work / "deadleaves", catalogue.dead_leaves, FRAME, seed=catalogue.seed)
    sim = preset_config(preset).simulate
    patches = catalogue.patches_per_image or sim.patches_per_image
    sim = dataclasses.replace(sim, patches_per_image=patches, rows_per_file=64, seed=catalogue.seed,
                              camera_choice="draw")  # fmt: skip
    summary = build_dataset(frames, None, work / "data", sim, catalogue=lenses, map_shards=pool_map(workers))
    print(f"data: {len(frames)} frames, {summary['pairs']} pairs, {catalogue.lenses} lenses "
          f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
    return work / "data", counts


def train(
    work: Path, data: Path, config: TrainConfig, schedule: Schedule, device: str
) -> tuple[nn.Module, dict[str, Any]]:
    """Train for ``schedule.steps`` steps (``loop.fit``) from ``work/run/last.pt`` when there; returns
    the weight average and ``{"steps", "planned_steps", "train_seconds", "patches_per_s"}``."""
    run = work / "run"
    run.mkdir(parents=True, exist_ok=True)
    model = build_model(config).to(torch.device(device))
    optimizer = make_optimizer(model, config.optim)
    scheduler = make_scheduler(optimizer, dataclasses.replace(config, epochs=1), schedule.steps)
    ema = WeightEMA(model, config.optim.ema_decay)
    start = Progress()
    last = run / "last.pt"
    if last.exists():
        state = load_checkpoint(last, model, optimizer, scheduler, map_location=torch.device(device))
        ema.load_state_dict(state["extra"]["ema"])
        start = Progress(step=state["extra"]["step"], seconds=state["extra"]["seconds"])
        if state["extra"]["steps"] != schedule.steps or state["train_config"] != config:
            raise InputError(f"{last}: a run of another preset or --steps; use a new --work")
        print(f"resuming {last} at step {start.step}", flush=True)
    reader = PairReader(data, val_fraction=0.0, with_psf=True)
    per_epoch = reader.steps_per_epoch(config.batch_size, "all", drop_last=True)

    def stream() -> Iterator[dict]:  # the same batches as an uninterrupted run, from step ``start.step``
        for epoch in itertools.count(start.step // per_epoch):
            batches = reader.batches("all", config.batch_size, seed=config.seed, epoch=epoch, drop_last=True,
                                     shuffle_buffer=512)  # fmt: skip
            skip = start.step % per_epoch if epoch == start.step // per_epoch else 0
            first = epoch * per_epoch + skip
            for step, batch in enumerate(itertools.islice(batches, skip, None), start=first):
                # Without its ISP draw and noise level with probability side_info_dropout: as a photograph.
                generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
                dropout = schedule.side_info_dropout
                if dropout > 0 and float(torch.rand((), generator=generator)) < dropout:
                    batch = {k: v for k, v in batch.items() if k not in ("isp", "noise")}
                yield batch

    def end_chunk(done: Progress, stats: dict[str, float]) -> None:
        began = done.step - stats["steps"]
        if not math.isfinite(stats["loss"]):  # keep the last good checkpoint rather than NaN weights
            message = f"non-finite loss in steps {began}-{done.step}: {last} keeps step {began}"
            raise FloatingPointError(message)
        extra = {"step": done.step, "steps": schedule.steps, "seconds": done.seconds, "ema": ema.state_dict()}
        save_checkpoint(last, model, optimizer, scheduler, 0, config, extra)
        if schedule.snapshot_every and done.step % schedule.snapshot_every == 0:
            save_checkpoint(run / f"step-{done.step:06d}.pt", ema.module, None, None, 0, config)
        record = {"step": done.step, "loss": stats["loss"], "patches_per_s": stats["patches_per_s"],
                  "lr": optimizer.param_groups[0]["lr"], "seconds": done.seconds}  # fmt: skip
        append_jsonl(run / "log.jsonl", record)
        print(f"step {done.step}/{schedule.steps}: loss {stats['loss']:.4f}, {stats['patches_per_s']:.1f} "
              f"patches/s, {done.seconds:.0f} s", flush=True)  # fmt: skip

    batches = stream()
    done = fit(model, lambda epoch: batches, optimizer, config,
               Budget(steps=schedule.steps, seconds=schedule.time_limit), scheduler=scheduler, ema=ema,
               start=start, every=lambda step: step + schedule.save_every, on_chunk=end_chunk)  # fmt: skip
    if done.step < schedule.steps:
        print(f"time limit ({schedule.time_limit} s) reached at step {done.step}", flush=True)
    info = {"steps": done.step, "planned_steps": schedule.steps, "train_seconds": round(done.seconds),
            "patches_per_s": done.step * config.batch_size / max(done.seconds, 1e-9)}  # fmt: skip
    return ema.module, info


def pretrain(
    work: Path,
    preset: str = "pretrain-cpu",
    catalogue: Catalogue = Catalogue(),
    schedule: Schedule = Schedule(),
    *,
    device: str = "cpu",
    workers: int = 1,
    export: Path | None = None,
    prepare_only: bool = False,
    command: str = "",
) -> Path | None:
    """The whole recipe in ``work``: data, training (resumed when there), and with ``export`` the
    bundled weights (float16, with their provenance and ``command``); returns the exported file."""
    if preset not in STEPS:
        raise InputError(f"pretrain preset: expected one of {sorted(STEPS)}, got {preset!r}")
    schedule = dataclasses.replace(schedule, steps=schedule.steps or STEPS[preset])
    work.mkdir(parents=True, exist_ok=True)
    data, frame_counts = prepare(work, catalogue, preset, workers)
    if prepare_only:
        return None
    config = dataclasses.replace(preset_config(preset).train, seed=catalogue.seed, amp=device != "cpu")
    model, info = train(work, data, config, schedule, device)
    if export is None:
        return None
    sim = preset_config(preset).simulate
    provenance = {
        **info, "preset": preset, "lenses": catalogue.lenses, "lens_seed": catalogue.lens_seed,
        "grid": list(catalogue.grid), "psf_size": catalogue.psf_size, "frame": list(FRAME),
        "frames": frame_counts,
        "photos": str(catalogue.frames or ("make-photos train split" if catalogue.use_photos else "none")),
        "scales": ",".join(catalogue.scales), "flips": catalogue.flips, "dead_leaves": catalogue.dead_leaves,
        "patches_per_image": catalogue.patches_per_image or sim.patches_per_image,
        "patch": sim.patch_size, "side_info_dropout": schedule.side_info_dropout, "seed": catalogue.seed,
        "device": device, "machine": platform.processor() or platform.machine(), "command": command,
    }  # fmt: skip
    return export_pretrained(model, config, export, provenance)
