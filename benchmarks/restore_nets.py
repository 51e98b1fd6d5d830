"""Short CPU training runs of one restoration network: validation dB over the degraded input.

Loads a whole pair dataset (``degtrans simulate`` output) into memory, holds out every patch of one
source image (no crop of it is trained on), trains ``--steps`` optimizer steps on random batches of
the rest and prints the validation PSNR of the model against that of the degraded input.

It trains with ``degtrans.restore.loop.fit`` and a ``TrainConfig`` from ``--set`` (keys the checkout
does not know are an error).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/restore_nets.py --data DATA --holdout rocket \\
        --steps 600 --set train.model=fovkpn --set train.width=16 --set train.optim.learning_rate=1e-3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from degtrans.config import RunConfig, apply_overrides
from degtrans.field import PSFField
from degtrans.metrics import psnr
from degtrans.restore.coords import fov_coords
from degtrans.restore.loop import Budget, Progress, evaluate, fit, make_optimizer
from degtrans.restore.models import build_model, model_spec
from degtrans.restore.recipe import WeightEMA, make_scheduler

ISP_NAMES = ["isp_rgb_gain", "isp_red_gain", "isp_blue_gain"]
ISP_NAMES += [f"isp_rgb2cam_{i}{j}" for i in range(3) for j in range(3)]


def load(data_dir: Path) -> dict:
    """Every pair of the dataset as tensors (one camera), with centre and corner PSFs."""
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


def batches(
    data: dict, index: torch.Tensor, batch_size: int, generator: torch.Generator | None, needs_psf: bool
):
    """Batches of ``data`` at ``index``: random ones drawn by ``generator`` forever, or (``None``) each
    patch once in chunks of ``batch_size``."""
    names = ["degraded", "clean", "coords", *(["psf_corners"] if needs_psf else []), "noise", "isp"]

    def take(rows: torch.Tensor) -> dict:
        return {name: data[name][rows] for name in names if name in data}

    if generator is None:
        yield from (take(chunk) for chunk in index.split(batch_size))
        return
    while True:
        yield take(index[torch.randint(len(index), (batch_size,), generator=generator)])


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
    config = dataclasses.replace(
        config,
        epochs=1,
        optim=dataclasses.replace(config.optim, warmup_steps=args.warmup, ema_decay=args.ema),
    )
    data = load(args.data)
    holdout = torch.tensor([s == args.holdout for s in data["source"]])
    train_idx, val_idx = torch.nonzero(~holdout).flatten(), torch.nonzero(holdout).flatten()
    model = build_model(config)
    needs_psf = model_spec(config.model).needs_psf
    ema = WeightEMA(model, args.ema) if args.ema else None
    optimizer = make_optimizer(model, config.optim)
    scheduler = make_scheduler(optimizer, config, args.steps)
    generator = torch.Generator().manual_seed(args.seed)
    identity = float(psnr(data["degraded"][val_idx], data["clean"][val_idx]).mean())

    def validate(net: torch.nn.Module) -> float:
        return evaluate(net, batches(data, val_idx, 16, None, needs_psf))["psnr"]

    print(
        f"{config.model}: {sum(p.numel() for p in model.parameters())} parameters, "
        f"train {len(train_idx)} / val {len(val_idx)} patches, input {identity:.2f} dB"
    )
    print(f"  config: {dataclasses.asdict(config)}")
    start = time.perf_counter()
    print(f"  step 0: val {validate(model) - identity:+.2f} dB over the input")
    last: dict[str, float] = {}

    def end_chunk(done: Progress, _stats: dict[str, float]) -> None:
        line = f"  step {done.step}: loss {last['loss']:.4f}  val {validate(model) - identity:+.2f} dB"
        if ema is not None:
            line += f"  (EMA {validate(ema.module) - identity:+.2f} dB)"
        print(line + f"  {time.perf_counter() - start:.0f} s", flush=True)

    stream = batches(data, train_idx, config.batch_size, generator, needs_psf)
    fit(model, lambda epoch: stream, optimizer, config, Budget(steps=args.steps), scheduler=scheduler,
        ema=ema, every=lambda step: (step // args.eval_every + 1) * args.eval_every, on_chunk=end_chunk,
        report=last.update)  # fmt: skip


if __name__ == "__main__":
    main()
