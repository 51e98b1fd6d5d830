"""Everything that needs a GPU, in one command, within about 8 minutes (``make gpu-check``).

One run measures and checks all of it, each figure a ratio against a floor measured in the same run
(or the issue's absolute target):

1. ``sv_conv``: ``benchmarks/sv_conv_gpu.py``: ``sv_conv2d`` against the single-kernel FFT floor on
   3000x4000 and 4000x6000 frames (forward, forward+backward), Triton against the batched FFT and the
   pick of ``"auto"``, and 256 patches from 8 cameras in one call against a loop of calls;
2. ``simulate``: ``benchmarks/simulate.py --gpu-check``: the device synthesis path against the
   one-thread CPU path (pairs/s), and the largest difference of their shards in DN;
3. ``train``: training speed (``--step train-speed``): FOV-KPN (width 32, 128x128, batch 16, bfloat16
   autocast) with each DCNv2 backend, and deep Wiener, in patches/s;
4. ``pytest``: ``pytest -m "gpu and not ray"`` (no Ray cluster is needed).

Each step runs as its own process with its own time limit (``STEPS``), one after another (a test run
beside a benchmark spoils both). Its output goes straight to ``OUTPUT/<step>.log`` and, as soon as it
ends, its figures into ``OUTPUT/gpu_check.json`` (every step's own JSON inside) and
``OUTPUT/summary.md``, so a run cut short keeps what finished (six files in all). Any CUDA machine
will do, with the pinned torch (``pip install torch==2.13.0``: the CUDA build on Linux) and
``pip install -e '.[dev]'`` (docs/kernels.md). On a machine without CUDA it says so and exits 0.

    python benchmarks/gpu_check.py [--output benchmarks/results/gpu-check] [--budget 450]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from degtrans.config import OptimConfig

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "gpu-check"
# Imported by the code or the tests the steps run: reported when the install lacks them.
NEEDED = ("rawpy", "tomli_w", "duckdb", "triton", "pyarrow", "cv2")

Row = tuple[str, str, str]  # figure, value, target


@dataclass(frozen=True)
class Step:
    """One check: its command (``{scratch}``: a folder for its result), time limit and result reader.

    ``summarise(scratch)`` returns the summary rows and the step's record (its JSON) for the report.
    """

    name: str
    command: list[str]
    timeout_s: int
    summarise: Callable[[Path], tuple[list[Row], object]]


def _ratio(value: float, op: str, target: float) -> tuple[str, str]:
    """(value, "op target met") of a figure with a target."""
    met = value <= target if op == "<=" else value >= target
    return f"{value:.3g}", f"{op} {target:g} {'met' if met else 'NOT met'}"


def _sv_conv(scratch: Path) -> tuple[list[Row], object]:
    record = json.loads((scratch / "sv_conv_gpu.json").read_text())
    rows: list[Row] = []
    for case, row in record["frames"].items():
        rows.append(
            (f"{case} forward / FFT floor ({row['backend']})", *_ratio(row["forward_over_floor"], "<=", 4))
        )
        rows.append((f"{case} fwd+bwd / floor fwd+bwd", *_ratio(row["forward_backward_over_floor"], "<=", 4)))
    for k, row in record["backends"].items():
        times = ", ".join(f"{b} {1e3 * s:.2f} ms" for b, s in row["seconds"].items())
        rows.append(
            (f"3000x4000 5x7 {k}: {times}; auto / fastest", *_ratio(row["auto_over_fastest"], "<=", 1.1))
        )
        if "max_rel_error_vs_reference" in row:
            rows.append(
                (f"{k}: max error / max |reference|", *_ratio(row["max_rel_error_vs_reference"], "<=", 1e-5))
            )
    p = record["patches"]
    figure = f"{p['patches']} patches of {p['patch']}^2 from {p['cameras']} cameras: loop ({p['loop_best']})"
    figure += " / one call"
    rows.append((figure, *_ratio(p["loop_over_batched"], ">=", 20)))
    return rows, record


def _simulate(scratch: Path) -> tuple[list[Row], object]:
    record = json.loads((scratch / "simulate.json").read_text())
    g = record["gpu_vs_cpu"]
    rows = [
        ("device path pairs/s", f"{g['gpu']['pairs_per_s']:.0f}", ""),
        ("one-thread CPU path pairs/s", f"{g['cpu']['pairs_per_s']:.1f}", ""),
        ("device path / CPU path", *_ratio(g["gpu_over_cpu"], ">=", 20)),
        ("largest shard difference (DN)", *_ratio(g["max_abs_diff_dn"], "<=", 1)),
    ]
    return rows, record


def _train(scratch: Path) -> tuple[list[Row], object]:
    record = json.loads((scratch / "train_speed.json").read_text())
    speeds = record["patches_per_s"]
    targets = {"fovkpn": 1500, "fovkpn (deform triton)": 1500, "wiener": 3000}
    rows = [(f"{name} patches/s", *_ratio(value, ">=", targets[name])) for name, value in speeds.items()]
    if "fovkpn" in speeds and "fovkpn (deform triton)" in speeds:
        ratio = speeds["fovkpn (deform triton)"] / speeds["fovkpn"]
        rows.append(("FOV-KPN patches/s: deform triton / reference", f"{ratio:.2f}", ""))
    return rows, record


def _pytest(scratch: Path) -> tuple[list[Row], object]:
    suite = ET.parse(scratch / "pytest-gpu.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    summary = f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors"
    summary += f", {counts['skipped']} skipped"
    rows: list[Row] = [("tests", summary, "all pass " + ("met" if passed and not failed else "NOT met"))]
    rows += [("failed", name, "") for name in failed]
    return rows, {"counts": counts, "passed": passed, "failed": failed}


PY = sys.executable
STEPS = [
    Step(
        "sv_conv", [PY, "benchmarks/sv_conv_gpu.py", "--output", "{scratch}/sv_conv_gpu.json"], 140, _sv_conv
    ),
    Step(
        "simulate",
        [PY, "benchmarks/simulate.py", "--gpu-check", "--output", "{scratch}/simulate.json"],
        90,
        _simulate,
    ),  # fmt: skip
    Step(
        "train", [PY, "benchmarks/gpu_check.py", "--step", "train-speed", "--output", "{scratch}"], 60, _train
    ),
    Step(
        "pytest",
        [
            PY,
            "-m",
            "pytest",
            "-m",
            "gpu and not ray",
            "--ignore=tests/cluster",
            "-q",
            "-p",
            "no:cacheprovider",
            "--junitxml={scratch}/pytest-gpu.xml",
        ],
        160,
        _pytest,
    ),  # fmt: skip
]


def train_speed(out: Path, steps: int = 20, batch: int = 16, patch: int = 128) -> None:
    """Patches/s of the training loop of each network on the GPU (bfloat16 autocast, after 3 warm-up
    steps), FOV-KPN with each DCNv2 backend; the batch is on the device already (the network, not the
    host copies, is measured)."""
    import torch

    from degtrans.config import TrainConfig
    from degtrans.kernels import deform
    from degtrans.restore.coords import fov_coords
    from degtrans.restore.loop import Budget, build_model, fit, make_optimizer

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
    data = {key: value.cuda() for key, value in data.items()}
    speeds = {}
    default = deform.AUTO_ON_CUDA
    for name, model_name, deform_backend in (
        ("fovkpn", "fovkpn", "reference"),
        ("fovkpn (deform triton)", "fovkpn", "triton"),
        ("wiener", "wiener", default),
    ):
        deform.AUTO_ON_CUDA = deform_backend
        try:
            torch.manual_seed(0)
            config = TrainConfig(model=model_name, batch_size=batch, optim=OptimConfig(learning_rate=1e-3))
            model = build_model(config).cuda()
            optimizer = make_optimizer(model, config.optim)
            # Warm-up: cuDNN, Triton autotuning, allocator.
            fit(model, lambda epoch: [data] * 3, optimizer, config, Budget(epochs=1))
            torch.cuda.synchronize()
            start = time.perf_counter()
            fit(model, lambda epoch: [data] * steps, optimizer, config, Budget(epochs=1))
            torch.cuda.synchronize()
            speeds[name] = steps * batch / (time.perf_counter() - start)
        except Exception as error:  # one network failing (a Triton kernel, say) keeps the others' figures
            print(f"{name}: failed: {type(error).__name__}: {error}", flush=True)
        finally:
            deform.AUTO_ON_CUDA = default
        print(f"{name}: {speeds.get(name, float('nan')):.0f} patches/s", flush=True)
    record = {
        "patches_per_s": speeds,
        "batch": batch,
        "patch": patch,
        "autocast": "bfloat16",
        "deform_auto_on_cuda": default,
        "device": torch.cuda.get_device_name(),
    }
    (out / "train_speed.json").write_text(json.dumps(record, indent=2) + "\n")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def run_steps(
    out: Path, budget_s: float, machine: dict | None = None, steps: list[Step] | None = None
) -> list[dict]:
    """Run ``steps`` (default ``STEPS``) one after another within ``budget_s`` seconds in all, each with
    its own limit (cut to what is left; skipped under 30 s left). Each step's log goes to ``out/<name>.log``
    and, when it ends, the report (``gpu_check.json``, ``summary.md``) is rewritten with its figures."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(ROOT)) if p)
    env.pop("TRITON_INTERPRET", None)  # the real kernels, not the interpreter
    start = time.monotonic()
    records: list[dict] = []
    for step in STEPS if steps is None else steps:
        left = budget_s - (time.monotonic() - start)
        record = {
            "step": step.name,
            "status": "skipped (out of time)",
            "seconds": 0.0,
            "rows": [],
            "result": None,
        }
        if left >= min(step.timeout_s, 30):
            scratch = Path(tempfile.mkdtemp(prefix=f"gpu-check-{step.name}-"))
            command = [part.replace("{scratch}", str(scratch)) for part in step.command]
            limit = min(step.timeout_s, left)
            print(f"== {step.name} (limit {limit:.0f} s): {' '.join(command)}", flush=True)
            began = time.monotonic()
            with open(out / f"{step.name}.log", "w") as log:
                log.write(f"$ {' '.join(command)}\n")
                log.flush()
                # Its own process group: a step past its limit is killed with everything it started.
                child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
                try:
                    code = child.wait(timeout=limit)
                    record["status"] = "ok" if code == 0 else f"failed (exit {code})"
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                    record["status"] = f"timed out ({limit:.0f} s)"
            record["seconds"] = time.monotonic() - began
            try:
                record["rows"], record["result"] = step.summarise(scratch)
            except (OSError, KeyError, ValueError, TypeError, AttributeError, ET.ParseError) as error:
                record["rows"] = [("result", f"unreadable: {type(error).__name__}: {error}", "")]
            print(f"   {record['status']} in {record['seconds']:.0f} s", flush=True)
        records.append(record)
        write_report(out, records, machine or {})
    return records


def write_report(out: Path, records: list[dict], machine: dict) -> None:
    """``gpu_check.json`` and ``summary.md`` of the steps so far (written atomically)."""
    _write(out / "gpu_check.json", json.dumps({"machine": machine, "steps": records}, indent=2) + "\n")
    _write(out / "summary.md", summary_table(records, machine.get("device", "?")))


def summary_table(records: list[dict], device: str) -> str:
    """The Markdown table every step's figures go into."""
    lines = [f"# gpu_check on {device}", ""]
    lines += ["| step | status | s | figure | value | target |", "|---|---|---|---|---|---|"]
    for record in records:
        rows = record["rows"] or [("", "", "")]
        for i, (figure, value, target) in enumerate(rows):
            head = (record["step"], record["status"], f"{record['seconds']:.0f}") if i == 0 else ("", "", "")
            lines.append(f"| {' | '.join(head)} | {figure} | {value} | {target} |")
    return "\n".join(lines) + "\n"


def machine_info() -> dict:
    """Device, versions and the modules the steps need that this Python lacks."""
    import torch

    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    info = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "missing_modules": missing,
    }
    if "triton" not in missing:
        import triton

        info["triton"] = triton.__version__
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=RESULTS, help="report folder")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all steps (default 450)")
    parser.add_argument("--step", choices=["train-speed"], help="run one in-process step (used by STEPS)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine; nothing to check (run it on a GPU machine)")
        return 0
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.step == "train-speed":
        train_speed(out)
        return 0
    machine = machine_info()
    print(f"gpu_check on {machine['device']}, torch {machine['torch']}", flush=True)
    if machine["missing_modules"]:
        print(f"missing modules: {machine['missing_modules']} (pip install -e '.[dev]')", flush=True)
    records = run_steps(out, args.budget, machine)
    print("\n" + summary_table(records, machine["device"]))
    print(f"wrote {out / 'summary.md'} and {out / 'gpu_check.json'}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
