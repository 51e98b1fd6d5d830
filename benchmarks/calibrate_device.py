"""Calibration on a GPU in one command (no Ray: the local runner calls the stage II actors' work,
``Shard`` and ``fit_tile``, directly, on CUDA).

Steps, each its own process with its own time limit, all within ``--budget`` seconds:

1. ``small-cpu``: stage II alone (true geometry) on the 512x768, 5x7, k = 31 benchmark on this machine's
   CPU (all cores), the baseline of the speed-up;
2. ``small-gpu``: the same on the GPU (the issue's goal: at least 20x);
3. ``full-gpu``: the whole pipeline at 4000x6000, 8x12 tiles, k = 63, the ``sharp-centre`` lens, 4 targets
   1.5x the frame (+1 held out), camera integrating 8x8 samples per pixel, on the GPU (goal: at most 3
   minutes, aligned median at most 0.08). Its targets and photographs are made first, untimed.

Writes each step's JSON (``benchmarks/calibrate.py``'s format) and ``calibrate_device.json`` (the summary)
into ``--output``. Any CUDA machine with the pinned torch (``pip install torch==2.13.0``) and
``pip install -e '.[dev]'`` will do; on a machine without CUDA it says so and exits 0.

    python benchmarks/calibrate_device.py --output OUT --budget 450
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = [sys.executable, "benchmarks/calibrate.py", "--skip-ray"]
SMALL = ["--geometry", "true", "--targets", "4"]
FULL = ["--size", "4000x6000", "--grid", "8x12", "--k", "63", "--lens", "sharp-centre",
        "--target-scale", "1.5", "--targets", "4", "--supersample", "8"]  # fmt: skip
STEPS = [
    ("small-cpu", [*BENCH, *SMALL, "--device", "cpu"], 200, {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}),
    ("small-gpu", [*BENCH, *SMALL, "--device", "cuda"], 90, {}),
    ("full-gpu", [*BENCH, *FULL, "--device", "cuda"], 480, {}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all steps")
    parser.add_argument("--steps", nargs="+", default=[name for name, *_ in STEPS])
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("calibrate_device: no CUDA GPU on this machine; nothing to run")
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)
    start = time.monotonic()
    summary: dict = {"device": torch.cuda.get_device_name(), "steps": {}}
    for name, command, limit, extra in STEPS:
        if name not in args.steps:
            continue
        left = args.budget - (time.monotonic() - start)
        if left < 30:
            summary["steps"][name] = {"status": "skipped (out of time)"}
            continue
        output = args.output / f"{name}.json"
        print(f"== {name}: {' '.join(command)}", flush=True)
        began = time.monotonic()
        try:
            done = subprocess.run(
                [*command, "--output", str(output)],
                cwd=ROOT,
                env={**env, **extra},
                timeout=min(limit, left),
            )
            status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out ({min(limit, left):.0f} s)"
        record = {"status": status, "wall_s": time.monotonic() - began}
        if output.exists():
            record["rows"] = json.loads(output.read_text())["rows"]
        summary["steps"][name] = record
    rows = {name: step.get("rows", {}) for name, step in summary["steps"].items()}
    first = {name: next(iter(rows.get(name, {}).values()), {}) for name in ("small-cpu", "small-gpu")}
    small = [first[name].get("seconds") for name in ("small-cpu", "small-gpu")]
    if all(small):
        summary["small_speedup"] = small[0] / small[1]
        print(f"stage II, 512x768: GPU {summary['small_speedup']:.1f}x the speed of the CPU")
    (args.output / "calibrate_device.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
