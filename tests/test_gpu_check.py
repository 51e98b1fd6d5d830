"""`make gpu-check` (benchmarks/gpu_check.py): exits 0 without a GPU; a failed or slow step hides no other."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture
def gpu_check(benchmark_script):
    return benchmark_script("gpu_check")


def test_make_target_runs_the_script():
    done = subprocess.run(["make", "-n", "gpu-check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "benchmarks/gpu_check.py" in done.stdout


def test_without_cuda_it_says_so_and_exits_zero(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(SCRIPT), "--output", str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU" in done.stdout
    assert not (tmp_path / "out").exists()


def test_failed_and_timed_out_steps_are_reported_and_the_rest_still_run(gpu_check, tmp_path, monkeypatch):
    def rows(out):
        return [("value", (out / "v.txt").read_text())]

    steps = [
        gpu_check.Step("fails", [sys.executable, "-c", "raise SystemExit(3)"], 30, rows),
        gpu_check.Step("hangs", [sys.executable, "-c", "import time; time.sleep(30)"], 1, rows),
        gpu_check.Step("works", [sys.executable, "-c", "open('{out}/v.txt', 'w').write('42')"], 30, rows),
        gpu_check.Step("late", [sys.executable, "-c", "pass"], 600, rows),
    ]
    monkeypatch.setattr(gpu_check, "STEPS", steps)
    records = gpu_check.run_steps(tmp_path, budget_s=60)
    status = {r["step"]: r["status"] for r in records}
    assert status["fails"] == "failed (exit 3)"
    assert status["hangs"].startswith("timed out")
    assert status["works"] == "ok" and records[2]["rows"] == [("value", "42")]
    assert status["late"] == "ok"  # its limit is cut to what is left of the budget
    table = gpu_check.summary_table(records, "Test GPU")
    assert "| works | ok |" in table and "| value | 42 |" in table and "Test GPU" in table
