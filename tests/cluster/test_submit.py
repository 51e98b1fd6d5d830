"""``degtrans submit`` against a real head (``ray start --head`` on loopback, in a temporary directory).

The head gets its own temp dir, its own free ports and its own token, and is started with
``--block`` in a process group of its own that the fixture ends by id: it never meets the shared
``ray_session`` (or another engineer's Ray) and ``ray stop`` (which stops every Ray on the machine) is
never needed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from degtrans.cli import main
from degtrans.cluster import submit
from degtrans.errors import DegtransError


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def ray_head():
    """A real Ray head on loopback; yields ``(dashboard_url, token)``."""
    temp = Path(
        tempfile.mkdtemp(prefix="rh", dir="/tmp")
    )  # short: Ray's unix socket paths must fit 107 chars
    gcs, dash, client, agent, agent_grpc, metrics, rt_env, node_mgr, obj_mgr = _free_ports(9)
    token = secrets.token_hex(16)
    # A cluster node's `python` has the dependencies: here that is the venv's.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PATH": path}
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--block",
            "--num-cpus",
            "2",
            "--node-ip-address",
            "127.0.0.1",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={rt_env}",
            f"--node-manager-port={node_mgr}",
            f"--object-manager-port={obj_mgr}",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=open(temp / "head.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        import requests

        deadline = time.monotonic() + 90
        while True:
            try:
                # /api/version is behind token auth and served by the job module: ready to submit.
                if requests.get(
                    f"{url}/api/version", headers={"Authorization": f"Bearer {token}"}, timeout=2
                ).ok:
                    break
            except requests.ConnectionError:
                pass
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray head did not start: {(temp / 'head.log').read_text()[-2000:]}")
            time.sleep(1)
        yield url, token
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def test_token_lookup_order(monkeypatch, tmp_path):
    path = tmp_path / "tok"
    path.write_text("from-file\n")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert submit.find_token() == ("from-env", "RAY_AUTH_TOKEN")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    assert submit.find_token() == ("from-file", str(path))
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    token, reason = submit.find_token()
    assert token is None and "missing" in reason
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert submit.find_token()[0] is None


def test_bad_address_and_command_are_clear_errors():
    with pytest.raises(submit.SubmitError, match="dashboard URL"):
        submit.resolve_address("127.0.0.1:6379")
    with pytest.raises(submit.SubmitError, match="nothing to submit"):
        submit.entrypoint([])
    with pytest.raises(submit.SubmitError, match="cannot be submitted"):
        submit.entrypoint(["submit", "status", "x"])
    with pytest.raises(submit.SubmitError, match="usage: degtrans submit logs JOB_ID"):
        submit.run_submit(["logs"])
    assert isinstance(submit.SubmitError("x"), DegtransError)


def test_a_submit_usage_error_is_one_line(capsys):
    assert main(["submit", "stop", "a", "b"]) == 2
    assert capsys.readouterr().err == "degtrans submit: error: usage: degtrans submit stop JOB_ID\n"


def test_job_entrypoint_runs_the_command_line(tmp_path):
    """The job's command is ``python -m degtrans ...``: run it here as the cluster's python would."""
    import shlex

    from degtrans.testing.synthetic import gaussian_field

    field = gaussian_field(grid=(2, 3), psf_size=7, image_size=(40, 60)).save(tmp_path / "cam A.npz")
    argv = shlex.split(submit.entrypoint(["inspect", str(field)]))
    assert argv[:3] == ["python", "-m", "degtrans"]
    out = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "2 x 3 tiles" in out.stdout


def test_unreachable_head_says_so(capsys):
    (port,) = _free_ports(1)
    code = main(["submit", "--address", f"http://127.0.0.1:{port}", "status", "nope"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot reach the Ray head" in err and str(port) in err


@pytest.mark.slow
def test_wrong_token_is_named(ray_head, monkeypatch):
    url, _ = ray_head
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    with pytest.raises(submit.SubmitError, match="rejected the token from RAY_AUTH_TOKEN"):
        submit.job_status("anything", url)


@pytest.mark.slow
def test_submit_round_trip(ray_head, monkeypatch, tmp_path, capsys):
    from degtrans.simulate.sources import bundled_images
    from degtrans.testing.synthetic import gaussian_field

    url, token = ray_head
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    image = bundled_images()[0]
    field = gaussian_field(grid=(2, 3), psf_size=7, image_size=(256, 384)).save(tmp_path / "camA.npz")
    out = tmp_path / "dataset"
    job_id = f"test-{secrets.token_hex(4)}"
    code = main(["submit", "--address", url, "--timeout", "240", "--submission-id", job_id, "--",
                 "simulate", "--images", str(image), "--psf", str(field), "--patch-size", "32",
                 "--patches-per-image", "2", "--workers", "1", "-o", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert "SUCCEEDED" in captured.err
    # The job wrote a complete dataset that the readers accept.
    from degtrans.restore.data import read_manifest

    manifest = read_manifest(out)
    assert manifest["samples"] == 2 and set(manifest["cameras"]) == {"camA"}
    assert main(["submit", "--address", url, "status", job_id]) == 0
    assert "SUCCEEDED" in capsys.readouterr().out
    assert main(["submit", "--address", url, "logs", job_id]) == 0
    assert "Running entrypoint" in capsys.readouterr().out
    # A failing job's exit status comes back (degtrans exits 2 on a user error).
    assert main(["submit", "--address", url, "--", "inspect", str(tmp_path / "missing.npz")]) == 2
