"""Restoration benchmark: CPU training/inference speed of FOV-KPN and deep Wiener, and PSNR after a
fixed training budget on a small dataset synthesised in the same run, next to Wiener, RL and identity.

    .venv/bin/python benchmarks/restore.py [--steps 60] [--threads 2]

Prints a table and writes benchmarks/results/restore.json. Speeds are for the fixed sizes below, on
the machine that runs it; PSNR gains are relative to the degraded input (identity).
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
import torch

from degtrans.config import RestoreConfig, TrainConfig
from degtrans.restore.checkpoint import save_checkpoint
from degtrans.restore.coords import fov_coords
from degtrans.restore.data import PairReader
from degtrans.restore.evaluate import evaluate_methods
from degtrans.restore.infer import restore_array
from degtrans.restore.loop import build_model, make_optimizer, train_epoch
from degtrans.testing.synthetic import gaussian_field
from degtrans.testing.toydata import write_toy_dataset

PATCH, BATCH = 64, 8
PHOTO = (256, 384)
MODELS = {
    "fovkpn": TrainConfig(model="fovkpn", width=16, offset_channels=16, batch_size=BATCH, learning_rate=1e-3),
    "wiener": TrainConfig(model="wiener", width=16, wiener_features=12, batch_size=BATCH, learning_rate=1e-3),
}


def _synthetic_batch(field) -> dict:
    gen = torch.Generator().manual_seed(0)
    y0 = torch.randint(0, field.image_size[0] - PATCH, (BATCH,), generator=gen)
    x0 = torch.randint(0, field.image_size[1] - PATCH, (BATCH,), generator=gen)
    psf = torch.from_numpy(field.psfs[0, 0]).expand(BATCH, -1, -1, -1).contiguous()
    return {
        "degraded": torch.rand(BATCH, 3, PATCH, PATCH, generator=gen),
        "clean": torch.rand(BATCH, 3, PATCH, PATCH, generator=gen),
        "coords": fov_coords(y0, x0, *field.image_size, PATCH, PATCH),
        "psf": psf,
    }


def training_speed(name: str, field, steps: int = 6) -> float:
    """Patches per second of ``train_epoch`` on fixed-size random batches (after one warm-up step)."""
    model = build_model(MODELS[name])
    optimizer = make_optimizer(model, MODELS[name])
    batch = _synthetic_batch(field)
    train_epoch(model, [batch], optimizer)
    start = time.perf_counter()
    train_epoch(model, [batch] * steps, optimizer)
    return steps * BATCH / (time.perf_counter() - start)


def inference_speed(name: str, field, config: RestoreConfig) -> float:
    """Megapixels per second of tiled restoration of a PHOTO-sized frame."""
    model = build_model(MODELS[name]).eval()
    image = np.random.default_rng(0).random((*PHOTO, 3)).astype(np.float32)
    start = time.perf_counter()
    restore_array(image, method="model", model=model, field=field, config=config, progress=False)
    return PHOTO[0] * PHOTO[1] / 1e6 / (time.perf_counter() - start)


def train_for(name: str, reader: PairReader, steps: int, run_dir: Path) -> tuple[Path, float]:
    """Train ``name`` for ``steps`` optimizer steps (the same budget for every model, on any machine).

    Returns:
        The checkpoint and the seconds it took.
    """
    config = MODELS[name]
    model = build_model(config)
    optimizer = make_optimizer(model, config)
    start, epoch, done = time.perf_counter(), 0, 0
    while done < steps:
        batches = reader.batches("train", config.batch_size, seed=0, epoch=epoch)
        stats = train_epoch(model, batches, optimizer, grad_clip=config.grad_clip, max_steps=steps - done)
        if stats["steps"] == 0:
            raise ValueError("benchmark dataset has no training batches")
        done, epoch = done + stats["steps"], epoch + 1
    seconds = time.perf_counter() - start
    return save_checkpoint(run_dir / f"{name}.pt", model, optimizer, None, epoch, config), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per model (batches of 8)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "restore.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    field = gaussian_field(grid=(4, 6), psf_size=15, image_size=PHOTO, sigma_centre=1.0, sigma_corner=2.5)
    restore_config = RestoreConfig(tile_size=128, overlap=16, max_tiles_in_memory=4)
    results: dict = {
        "machine": platform.processor() or platform.machine(), "threads": args.threads,
        "cuda": torch.cuda.is_available(), "patch": PATCH, "batch": BATCH, "photo": list(PHOTO),
        "steps": args.steps, "models": {k: dataclasses.asdict(v) for k, v in MODELS.items()},
    }  # fmt: skip
    results["train_patches_per_s"] = {name: training_speed(name, field) for name in MODELS}
    results["infer_mpix_per_s"] = {name: inference_speed(name, field, restore_config) for name in MODELS}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_toy_dataset(
            Path(tmp) / "data", field, frames=8, patches_per_frame=16, patch_size=PATCH, seed=0
        )
        reader = PairReader(data, val_fraction=0.2, with_psf=True)
        trained = {name: train_for(name, reader, args.steps, Path(tmp)) for name in MODELS}
        checkpoints = {name: path for name, (path, _) in trained.items()}
        results["train_seconds"] = {name: seconds for name, (_, seconds) in trained.items()}
        methods = ["identity", "wiener", "rl", *(f"ckpt:{path}" for path in checkpoints.values())]
        rows = evaluate_methods(data, methods, "val", config=restore_config, val_fraction=0.2, progress=False)
    labels = {"identity": "identity", "wiener": "wiener", "rl": "rl"}
    labels |= {
        f"ckpt:{Path(tmp).name}/{p.name}": f"{name} ({args.steps} steps)" for name, p in checkpoints.items()
    }
    overall = {labels.get(r["method"], r["method"]): r for r in rows if r["zone"] == "all"}
    base = overall["identity"]["psnr"]
    results["val_psnr"] = {k: v["psnr"] for k, v in overall.items()}
    results["val_ssim"] = {k: v["ssim"] for k, v in overall.items()}
    results["psnr_gain_over_identity_db"] = {k: v["psnr"] - base for k, v in overall.items()}
    print(f"CPU, {args.threads} threads; patches {PATCH}x{PATCH}, batch {BATCH}; photo {PHOTO[0]}x{PHOTO[1]}")
    for name in MODELS:
        print(f"  {name:<8} train {results['train_patches_per_s'][name]:7.1f} patches/s   "
              f"infer {results['infer_mpix_per_s'][name]:6.3f} MPix/s")  # fmt: skip
    print(f"validation ({overall['identity']['count']} patches), PSNR / SSIM / gain over identity:")
    for name, row in overall.items():
        print(f"  {name:<18} {row['psnr']:6.2f} dB  {row['ssim']:.4f}  {row['psnr'] - base:+6.2f} dB")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=args.output.parent, prefix=".restore.", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(results, handle, indent=2)
    os.replace(tmp_path, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
