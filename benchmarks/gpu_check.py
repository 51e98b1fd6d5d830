"""Everything that needs a GPU, in one command (``make gpu-check``), within about 8 minutes.

GPU time is lent rarely and briefly, so one run checks and measures all of it:

1. ``pytest -m gpu``: the GPU-marked tests (Triton kernels at real shapes, half precision,
   GPU synthesis against the CPU path, restoration on the device);
2. ``benchmarks/sv_conv.py --gpu-only``: Triton against the reference and our CPU path on the device,
   achieved fraction of memory bandwidth and FP32 rate;
3. ``benchmarks/simulate.py --gpu-check``: pairs/s of the GPU synthesis path against the CPU path in
   the same run, and the largest pixel difference between their shards;
4. training speed of both networks on the device (``--step train-speed`` of this script).

Each step runs as its own process with its own time limit (``STEPS`` below: adjust a command there);
a step that fails or times out is reported and the others still run. Prints one summary table and
writes it to ``benchmarks/results/gpu-check/summary.md`` (and ``summary.json``, and each step's own
JSON beside them). On a machine without CUDA it says so and exits 0.

    .venv/bin/python benchmarks/gpu_check.py [--output benchmarks/results/gpu-check] [--budget 480]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "gpu-check"


@dataclass(frozen=True)
class Step:
    """One check: the command (``{out}`` is the results folder), its time limit, how to read its result."""

    name: str
    command: list[str]
    timeout_s: int
    summarise: Callable[[Path], list[tuple[str, str]]]


def _pytest_rows(out: Path) -> list[tuple[str, str]]:
    suite = ET.parse(out / "pytest-gpu.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed, errors, skipped = counts["failures"], counts["errors"], counts["skipped"]
    return [("tests", f"{passed} passed, {failed} failed, {errors} errors, {skipped} skipped")]


def _sv_conv_rows(out: Path) -> list[tuple[str, str]]:
    gpu = json.loads((out / "sv_conv.json").read_text())["gpu"]
    rows = [(f"{name} forward ms", f"{1e3 * min(row['forward_s']):.2f}") for name, row in gpu["rows"].items()]
    rows += [(key, f"{value:.3g}") for key, value in gpu["achieved"].items()]
    rows.append(("triton max |err| vs reference", f"{gpu['rows']['triton']['max_abs_error']:.1e}"))
    return rows


def _simulate_rows(out: Path) -> list[tuple[str, str]]:
    gpu = json.loads((out / "simulate.json").read_text())["gpu_vs_cpu"]
    return [
        ("cpu path pairs/s", f"{gpu['cpu']['pairs_per_s']:.1f}"),
        ("gpu path pairs/s", f"{gpu['gpu']['pairs_per_s']:.1f}"),
        ("gpu / cpu", f"{gpu['gpu']['pairs_per_s'] / gpu['cpu']['pairs_per_s']:.2f}"),
        ("max |pixel diff| (uint16 DN)", f"{gpu['max_abs_diff_dn']}"),
    ]


def _train_rows(out: Path) -> list[tuple[str, str]]:
    speeds = json.loads((out / "train_speed.json").read_text())
    return [(f"{name} train patches/s", f"{value:.0f}") for name, value in speeds["patches_per_s"].items()]


PY = sys.executable
STEPS = [
    Step(
        "pytest -m gpu",
        [PY, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "--junitxml={out}/pytest-gpu.xml"],
        210,
        _pytest_rows,
    ),
    Step(
        "sv_conv (Triton)",
        [PY, "benchmarks/sv_conv.py", "--gpu-only", "--output", "{out}/sv_conv.json"],
        90,
        _sv_conv_rows,
    ),
    Step(
        "simulate (GPU vs CPU path)",
        [PY, "benchmarks/simulate.py", "--gpu-check", "--output", "{out}/simulate.json"],
        120,
        _simulate_rows,
    ),
    Step(
        "training speed",
        [PY, "benchmarks/gpu_check.py", "--step", "train-speed", "--output", "{out}"],
        60,
        _train_rows,
    ),
]


def train_speed(out: Path, steps: int = 20, batch: int = 16, patch: int = 128) -> None:
    """Patches/s of one optimizer step loop of each network on the GPU (after a warm-up step)."""
    import torch

    from degtrans.config import TrainConfig
    from degtrans.restore.coords import fov_coords
    from degtrans.restore.loop import build_model, make_optimizer, train_epoch

    frame = (1024, 1536)
    gen = torch.Generator().manual_seed(0)
    y0 = torch.randint(0, frame[0] - patch, (batch,), generator=gen)
    x0 = torch.randint(0, frame[1] - patch, (batch,), generator=gen)
    psf = torch.rand(batch, 3, 15, 15, generator=gen)
    data = {
        "degraded": torch.rand(batch, 3, patch, patch, generator=gen),
        "clean": torch.rand(batch, 3, patch, patch, generator=gen),
        "coords": fov_coords(y0, x0, *frame, patch, patch),
        "psf": psf / psf.sum((-1, -2), keepdim=True),
    }
    speeds = {}
    for name in ("fovkpn", "wiener"):
        config = TrainConfig(model=name, batch_size=batch, learning_rate=1e-3)
        model = build_model(config).cuda()
        optimizer = make_optimizer(model, config)
        train_epoch(model, [data], optimizer)
        torch.cuda.synchronize()
        start = time.perf_counter()
        train_epoch(model, [data] * steps, optimizer)
        torch.cuda.synchronize()
        speeds[name] = steps * batch / (time.perf_counter() - start)
    record = {"patches_per_s": speeds, "batch": batch, "patch": patch, "device": torch.cuda.get_device_name()}
    (out / "train_speed.json").write_text(json.dumps(record, indent=2) + "\n")


def run_steps(out: Path, budget_s: float) -> list[dict]:
    """Run every step within ``budget_s`` seconds in all; a step is skipped when its limit no longer fits."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)  # the real kernels, not the interpreter
    start = time.monotonic()
    records = []
    for step in STEPS:
        left = budget_s - (time.monotonic() - start)
        record = {"step": step.name, "status": "skipped (out of time)", "seconds": 0.0, "rows": []}
        if left < min(step.timeout_s, 30):
            records.append(record)
            continue
        command = [part.replace("{out}", str(out)) for part in step.command]
        print(f"== {step.name}: {' '.join(command)}", flush=True)
        began = time.monotonic()
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, timeout=min(step.timeout_s, left))
            record["status"] = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        except subprocess.TimeoutExpired:
            record["status"] = f"timed out ({min(step.timeout_s, left):.0f} s)"
        record["seconds"] = time.monotonic() - began
        try:
            record["rows"] = step.summarise(out)
        except (OSError, KeyError, ValueError, TypeError, ET.ParseError) as error:
            record["rows"] = [("result", f"unreadable: {type(error).__name__}: {error}")]
        records.append(record)
    return records


def summary_table(records: list[dict], device: str) -> str:
    """The Markdown table every step's figures go into."""
    lines = [f"# make gpu-check on {device}", ""]
    lines += ["| step | status | s | figure | value |", "|---|---|---|---|---|"]
    for record in records:
        rows = record["rows"] or [("", "")]
        for i, (key, value) in enumerate(rows):
            head = (record["step"], record["status"], f"{record['seconds']:.0f}") if i == 0 else ("", "", "")
            lines.append(f"| {' | '.join(head)} | {key} | {value} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all steps (default 480)")
    parser.add_argument("--step", choices=["train-speed"], help="run one in-process step (used by STEPS)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("make gpu-check: no CUDA GPU on this machine; nothing to check (run it on a GPU machine)")
        return 0
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.step == "train-speed":
        train_speed(out)
        return 0
    device = torch.cuda.get_device_name()
    records = run_steps(out, args.budget)
    table = summary_table(records, device)
    print("\n" + table)
    (out / "summary.md").write_text(table)
    machine = {"device": device, "torch": torch.__version__, "platform": platform.platform()}
    (out / "summary.json").write_text(json.dumps({"machine": machine, "steps": records}, indent=2) + "\n")
    print(f"wrote {out / 'summary.md'}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
