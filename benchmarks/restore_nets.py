"""Short CPU training runs of one restoration network: validation dB over the degraded input.

Loads a whole pair dataset (``degtrans simulate`` output) into memory, holds out every patch of one
source image (no crop of it is trained on), trains ``--steps`` optimizer steps on random batches of
the rest and prints the validation PSNR of the model against that of the degraded input.

It builds the network with ``degtrans.restore.loop.build_model`` and a ``TrainConfig`` from ``--set``
(keys the checkout does not know are an error), so the same command measures an older checkout.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/restore_nets.py --data DATA --holdout rocket \\
        --steps 600 --set train.model=fovkpn --set train.width=16 --set train.learning_rate=1e-3
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
import math
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from degtrans.config import RunConfig, apply_overrides
from degtrans.field import PSFField
from degtrans.metrics import psnr
from degtrans.restore.coords import fov_coords
from degtrans.restore.loop import build_model
from degtrans.restore.losses import restoration_loss

ISP_NAMES = ["isp_rgb_gain", "isp_red_gain", "isp_blue_gain"]
ISP_NAMES += [f"isp_rgb2cam_{i}{j}" for i in range(3) for j in range(3)]


def load(data_dir: Path) -> dict:
    """Every pair of the dataset as tensors (one camera), with centre and corner PSFs."""
    import json

    manifest = json.loads((data_dir / "manifest.json").read_text())
    (camera, entry), *_ = manifest["cameras"].items()
    field = PSFField.load(data_dir / entry["field"])
    tables = [pq.read_table(data_dir / s["path"]) for s in manifest["shards"]]
    rows = [r for t in tables for r in t.to_pylist()]
    size = rows[0]["height"]

    def image(name):
        return (
            torch.tensor(np.stack([np.asarray(r[name], np.float32) for r in rows]) / 65535.0)
            .view(len(rows), size, size, 3)
            .permute(0, 3, 1, 2)
            .contiguous()
        )

    y0 = torch.tensor([r["y0"] for r in rows])
    x0 = torch.tensor([r["x0"] for r in rows])
    fh = torch.tensor([r["frame_h"] for r in rows])
    fw = torch.tensor([r["frame_w"] for r in rows])
    corners = [(0, 0), (0, size), (size, 0), (size, size)]
    out = {
        "degraded": image("degraded"),
        "clean": image("clean"),
        "coords": fov_coords(y0, x0, fh, fw, size, size),
        "psf": torch.tensor(np.stack([field.at(r["y0"] + size / 2, r["x0"] + size / 2) for r in rows])),
        "psf_corners": torch.tensor(
            np.stack([np.stack([field.at(r["y0"] + dy, r["x0"] + dx) for dy, dx in corners]) for r in rows])
        ),
        "source": [r.get("source") or r["sample_id"].split("/")[1] for r in rows],
    }
    if "noise_read" in rows[0]:
        noise = [[r.get("noise_shot", 0.0), r["noise_read"]] for r in rows]
        out["noise"] = torch.tensor(noise, dtype=torch.float32)
    if "isp_rgb_gain" in rows[0]:
        out["isp"] = torch.tensor([[r[n] for n in ISP_NAMES] for r in rows], dtype=torch.float32)
    return out


def forward(model, data: dict, index: torch.Tensor) -> torch.Tensor:
    accepted = inspect.signature(model.forward).parameters
    kwargs = {}
    if getattr(model, "needs_psf", False):
        kwargs["psf"] = data["psf_corners" if "noise" in accepted else "psf"][index]
    for name in ("noise", "isp"):
        if name in accepted and name in data:
            kwargs[name] = data[name][index]
    return model(data["degraded"][index], data["coords"][index], **kwargs)


@torch.no_grad()
def validate(model, data: dict, index: torch.Tensor) -> float:
    model.eval()
    values = []
    for chunk in index.split(16):
        values.append(psnr(forward(model, data, chunk).clamp(0, 1), data["clean"][chunk]))
    model.train()
    return float(torch.cat(values).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--holdout", default="rocket", help="source image held out for validation")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=0, help="linear warmup steps before the cosine decay")
    parser.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    config = apply_overrides(RunConfig(), args.overrides).train
    torch.manual_seed(args.seed)
    data = load(args.data)
    holdout = torch.tensor([s == args.holdout for s in data["source"]])
    train_idx, val_idx = torch.nonzero(~holdout).flatten(), torch.nonzero(holdout).flatten()
    model = build_model(config)
    ema = copy.deepcopy(model) if args.ema else None
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )

    def factor(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(args.seed)
    identity = float(psnr(data["degraded"][val_idx], data["clean"][val_idx]).mean())
    print(
        f"{config.model}: {sum(p.numel() for p in model.parameters())} parameters, "
        f"train {len(train_idx)} / val {len(val_idx)} patches, input {identity:.2f} dB"
    )
    print(f"  config: {dataclasses.asdict(config)}")
    start = time.perf_counter()
    print(f"  step 0: val {validate(model, data, val_idx) - identity:+.2f} dB over the input")
    for step in range(args.steps):
        index = train_idx[torch.randint(len(train_idx), (config.batch_size,), generator=generator)]
        restored = forward(model, data, index)
        loss = restoration_loss(restored, data["clean"][index], config.ssim_weight, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                    e.lerp_(p, 1.0 - args.ema)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            gain = validate(model, data, val_idx) - identity
            line = f"  step {step + 1}: loss {float(loss.detach()):.4f}  val {gain:+.2f} dB"
            if ema is not None:
                line += f"  (EMA {validate(ema, data, val_idx) - identity:+.2f} dB)"
            print(line + f"  {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
