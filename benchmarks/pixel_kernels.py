"""Per-pixel kernel application: CPU path (and Triton on CUDA) against the unfold reference, same process.

Default problem: a batch of 4 RGB 256x256 patches, 5x5 kernels per pixel, shared and per-channel
layouts, forward and forward+backward. Prints milliseconds and ``reference / ours`` ratios and writes
``benchmarks/results/pixel_kernels.json``.

    .venv/bin/python benchmarks/pixel_kernels.py [--size 256] [--batch 4] [--k 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from degtrans.atomic import write_atomic
from degtrans.kernels import apply_pixel_kernels

RESULTS = Path(__file__).resolve().parent / "results"


def _timed(fn, repeats: int, sync) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _measure(backend: str, x: torch.Tensor, kernels: torch.Tensor, repeats: int, sync) -> dict[str, float]:
    def forward():
        apply_pixel_kernels(x, kernels, backend=backend)

    def forward_backward():
        xi = x.detach().clone().requires_grad_(True)
        ki = kernels.detach().clone().requires_grad_(True)
        apply_pixel_kernels(xi, ki, backend=backend).backward(torch.ones_like(x))

    return {
        "forward_s": _timed(forward, repeats, sync),
        "forward_backward_s": _timed(forward_backward, repeats, sync),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS / "pixel_kernels.json")
    args = parser.parse_args()

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    record = {
        "problem": {k: v for k, v in vars(args).items() if k != "output"},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
        "results": {},
    }
    g = torch.Generator().manual_seed(0)
    print(
        f"{'device':<7}{'layout':<13}{'backend':<11}{'forward ms':>12}{'fwd+bwd ms':>12}{'ref/ours fwd':>14}"
    )
    for device in devices:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        ours = "triton" if device == "cuda" else "cpu"
        x = torch.rand(args.batch, 3, args.size, args.size, generator=g).to(device)
        for layout, shape in (
            ("shared", (args.batch, args.k**2)),
            ("per_channel", (args.batch, 3, args.k**2)),
        ):
            kernels = torch.rand(*shape, args.size, args.size, generator=g).to(device)
            rows = {b: _measure(b, x, kernels, args.repeats, sync) for b in ("reference", ours)}
            ratio = rows["reference"]["forward_s"] / rows[ours]["forward_s"]
            for backend, row in rows.items():
                print(
                    f"{device:<7}{layout:<13}{backend:<11}{1e3 * row['forward_s']:>12.1f}"
                    f"{1e3 * row['forward_backward_s']:>12.1f}{ratio if backend == ours else 1.0:>14.2f}"
                )
            record["results"][f"{device}/{layout}"] = rows
    write_atomic(args.output, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
