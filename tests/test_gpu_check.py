"""benchmarks/gpu_check.py: exits 0 without a GPU; each step logs and reports as it ends; a failed or slow
step hides no other; the benchmarks it runs work (on CPU tensors) and their results read back."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture
def gpu_check(benchmark_script):
    return benchmark_script("gpu_check")


def test_make_target_runs_the_script():
    done = subprocess.run(["make", "-n", "gpu-check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "benchmarks/gpu_check.py" in done.stdout


def test_without_cuda_it_says_so_and_exits_zero(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    command = [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--output", str(tmp_path / "out")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU" in done.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", ["calibrate_device.py", "transfer.py --variant device"])
def test_the_other_device_runners_without_cuda_exit_cleanly(script, tmp_path):
    """The calibration's device runner says so and exits 0; the transfer benchmark's device variant
    refuses with a clear message instead of training on the CPU for hours."""
    name, *flags = script.split()
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    command = [sys.executable, str(BENCHMARKS / name), *flags, "--output", str(tmp_path / "out")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    if name == "calibrate_device.py":
        assert done.returncode == 0, done.stderr
        assert "no CUDA GPU" in done.stdout and not (tmp_path / "out").exists()
    else:
        assert done.returncode != 0 and "cuda" in done.stderr.lower(), done.stderr


def test_steps_log_and_report_as_they_end_and_a_failure_hides_no_other(gpu_check, tmp_path):
    def rows(scratch):
        return [("value", (scratch / "v.txt").read_text(), "")], {"value": 42}

    marker = tmp_path / "grandchild-alive"
    # The hanging step starts a grandchild that would touch the marker after the step's limit.
    hang = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            f"\"import time; time.sleep(2); open({str(marker)!r}, 'w')\"]); print('hanging', flush=True); "
            "time.sleep(60)")  # fmt: skip
    steps = [
        gpu_check.Step("fails", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], 30, rows),
        gpu_check.Step("hangs", [sys.executable, "-c", hang], 1, rows),
        gpu_check.Step("works", [sys.executable, "-c", "open('{scratch}/v.txt', 'w').write('42')"], 30, rows),
        gpu_check.Step("late", [sys.executable, "-c", "pass"], 600, rows),
    ]
    records = gpu_check.run_steps(tmp_path, budget_s=60, machine={"device": "Test GPU"}, steps=steps)
    status = {r["step"]: r["status"] for r in records}
    assert status["fails"] == "failed (exit 3)" and "boom" in (tmp_path / "fails.log").read_text()
    assert status["hangs"].startswith("timed out") and "hanging" in (tmp_path / "hangs.log").read_text()
    assert status["works"] == "ok" and records[2]["rows"] == [("value", "42", "")]
    assert status["late"] == "ok"  # its limit is cut to what is left of the budget
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["step"] for s in report["steps"]] == ["fails", "hangs", "works", "late"]
    assert report["steps"][2]["result"] == {"value": 42}
    table = (tmp_path / "summary.md").read_text()
    assert "| works | ok |" in table and "| value | 42 |" in table and "Test GPU" in table
    time.sleep(2)
    assert not marker.exists()  # the timed-out step's whole process group was killed


def test_a_run_fits_its_budget_in_a_few_files(gpu_check):
    # One log per step, the JSON report and the table: at most 8 files, within 8 minutes.
    assert len(gpu_check.STEPS) + 2 <= 8
    assert (
        all(step.timeout_s for step in gpu_check.STEPS) and sum(s.timeout_s for s in gpu_check.STEPS) <= 480
    )


def _run_main(module, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [module.__file__, *argv])
    threads = torch.get_num_threads()
    try:
        module.main()
    finally:
        torch.set_num_threads(threads)


def test_the_benchmark_steps_run_on_cpu_tensors_and_read_back(
    gpu_check, benchmark_script, tmp_path, monkeypatch
):
    sv = benchmark_script("sv_conv_gpu")
    _run_main(sv, ["--device", "cpu", "--frames", "40x48", "--fields", "2x3:7", "--backend-psfs", "5,3",
                   "--patches", "3", "--patch", "12", "--cameras", "2", "--repeats", "1",
                   "--output", str(tmp_path / "sv_conv_gpu.json")], monkeypatch)  # fmt: skip
    rows, record = gpu_check._sv_conv(tmp_path)
    assert record["patches"]["max_abs_diff_vs_loop"] < 1e-5  # one call equals the loop of calls
    assert record["backends"]["k=5"]["max_rel_error_vs_reference"] < 1e-5
    assert any("loop" in figure for figure, _, _ in rows) and len(rows) == 2 + 2 + 1 + 1
    simulate = benchmark_script("simulate")
    _run_main(simulate, ["--gpu-check", "--device", "cpu", "--patch", "24", "--patches-per-image", "2",
                         "--output", str(tmp_path / "simulate.json")], monkeypatch)  # fmt: skip
    rows, record = gpu_check._simulate(tmp_path)
    assert record["gpu_vs_cpu"]["max_abs_diff_dn"] <= 1
    assert rows[-1][0] == "largest shard difference (DN)" and rows[-1][2].endswith(" met")


def test_train_and_pytest_results_read_back(gpu_check, tmp_path):
    speeds = {"fovkpn": 1200.0, "fovkpn (deform triton)": 1800.0, "wiener": 3100.0}
    (tmp_path / "train_speed.json").write_text(json.dumps({"patches_per_s": speeds}))
    rows, _ = gpu_check._train(tmp_path)
    assert rows[0] == ("fovkpn patches/s", "1.2e+03", ">= 1500 NOT met") and rows[2][2] == ">= 3000 met"
    assert rows[3][1] == "1.50"
    tests = tmp_path / "t"
    tests.mkdir()
    (tests / "test_x.py").write_text("def test_ok():\n    pass\n\ndef test_bad():\n    assert False\n")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)]
    subprocess.run([*command, f"--junitxml={tmp_path / 'pytest-gpu.xml'}"], cwd=tmp_path, capture_output=True)
    rows, result = gpu_check._pytest(tmp_path)
    assert result["passed"] == 1 and len(result["failed"]) == 1 and "test_bad" in result["failed"][0]
    assert rows[0][2] == "all pass NOT met"
