"""Ray Train overhead: patches/s of the Ray Train path (1 and 2 workers) against the local loop.

Same toy dataset, same model and batch size, same process. The local baseline runs
``restore.loop.fit`` over ``PairReader`` batches on one torch thread; the Ray figure is the
training throughput rank 0 reports per epoch with N workers of one CPU each (epoch 0, which starts
the worker group and the data pipeline, is left out of both). The figure of merit is
``overhead = N x local patches/s / Ray patches/s``: 1.0 is perfect scaling with no Ray cost
(target <= 1.15). Wall-clock totals, start-up included, are printed beside it.

    .venv/bin/python benchmarks/train.py [--frames 8 --patches 16 --patch 64 --epochs 4]

Writes ``benchmarks/results/train.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from degtrans.config import FOVKPNConfig, TrainConfig
from degtrans.restore.data import PairReader
from degtrans.restore.loop import Budget, build_model, fit, make_optimizer
from degtrans.testing.synthetic import gaussian_field
from degtrans.testing.toydata import write_toy_dataset

RESULTS = Path(__file__).resolve().parent / "results"


def local_throughput(data: Path, config: TrainConfig, threads: int) -> dict[str, float]:
    """Patches/s of the plain local loop (epochs after the first), and its wall time."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = build_model(config)
    optimizer = make_optimizer(model, config.optim)
    reader = PairReader(data, val_fraction=config.val_fraction)
    rates = []

    def batches(epoch: int):
        return reader.batches("train", config.batch_size, seed=config.seed, epoch=epoch,
                              shuffle_buffer=config.shuffle_buffer)  # fmt: skip

    def end_epoch(done, stats):
        if done.epoch > 1:  # epochs after the first
            rates.append(stats["patches_per_s"])

    fit(model, batches, optimizer, config, Budget(epochs=config.epochs), on_chunk=end_epoch)
    return {"patches_per_s": statistics.median(rates), "wall_s": time.perf_counter() - start}


def ray_throughput(data: Path, run: Path, config: TrainConfig) -> dict[str, float]:
    """Patches/s rank 0 reports (all workers, epochs after the first), and the fit's wall time."""
    from degtrans.cluster.train import train_distributed

    start = time.perf_counter()
    train_distributed(data, run, config)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["patches_per_s"] for r in records if r["epoch"] > 0]
    return {"patches_per_s": statistics.median(rates), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--patches", type=int, default=16, help="patches per frame")
    parser.add_argument("--patch", type=int, default=64, help="patch size")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args()

    from degtrans.cluster.session import ensure_ray

    ensure_ray()
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    field = gaussian_field(grid=(3, 4), psf_size=9, image_size=(192, 256), sigma_centre=0.8, sigma_corner=2.5)
    data = write_toy_dataset(work / "data", field, frames=args.frames, patches_per_frame=args.patches,
                             patch_size=args.patch, shards=4)  # fmt: skip
    base = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch,
        width=args.width,
        val_fraction=0.1,
        amp=False,
        shuffle_buffer=16,
        fovkpn=FOVKPNConfig(offset_channels=8, deform_blocks=1),
    )
    results = {"machine": platform.machine(), "cpus": torch.get_num_threads(), "args": vars(args), "runs": {}}
    # One local baseline on one thread: N workers of one CPU each ideally give N times its rate.
    local = local_throughput(data, base, threads=1)
    results["local_1_thread"] = local
    for workers in (1, 2):
        config = dataclasses.replace(base, ray=dataclasses.replace(base.ray, workers=workers))
        ray_run = ray_throughput(data, work / f"run{workers}", config)
        overhead = workers * local["patches_per_s"] / ray_run["patches_per_s"]
        results["runs"][f"{workers}_workers"] = {"ray": ray_run, "overhead": overhead}
        print(
            f"{workers} worker(s): Ray Train {ray_run['patches_per_s']:.1f} patches/s vs {workers} x local "
            f"{local['patches_per_s']:.1f} patches/s (1 thread) -> overhead {overhead:.2f}x (target <= 1.15)"
            f"; wall: local {local['wall_s']:.1f} s, Ray {ray_run['wall_s']:.1f} s (start-up included)"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "train.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
