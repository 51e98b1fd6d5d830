"""``degtrans submit``: run any subcommand as a Ray job on a cluster (Ray Job Submission SDK).

The job ships the ``degtrans`` package itself (``py_modules``); the cluster image provides the
dependencies (torch, ray). Token authentication: the token comes from ``RAY_AUTH_TOKEN``, the file
``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` and is sent as an ``Authorization: Bearer`` header
whatever ``RAY_AUTH_MODE`` says locally (``RAY_AUTH_MODE=disabled`` sends none), so a user never
meets Ray's "RAY_AUTH_MODE is currently 'disabled'" error for a head that wants a token.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import degtrans
from degtrans.errors import InputError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class SubmitError(InputError):
    """The head is unreachable, the token is missing or wrong, or the job id is unknown: each is fixed by
    the user's address, token or id (exit status 2)."""


@dataclass(frozen=True)
class JobOutcome:
    """A job's id, status and exit code (``job_status``)."""

    submission_id: str
    status: str
    exit_code: int


def resolve_address(address: str | None) -> str:
    """The dashboard URL: ``address``, else ``RAY_ADDRESS`` if it is an http(s) URL, else the local one."""
    if address is None:
        env = os.environ.get("RAY_ADDRESS", "")
        address = env if env.startswith(("http://", "https://")) else DEFAULT_ADDRESS
    if not address.startswith(("http://", "https://")):
        raise SubmitError(
            f"--address {address!r}: expected the head's dashboard URL, e.g. http://HEAD:8265 "
            "(the Job API listens on the dashboard port, not the GCS port 6379)"
        )
    return address.rstrip("/")


def find_token() -> tuple[str | None, str]:
    """The auth token and where it came from; ``(None, reason)`` when there is none to send."""
    mode = os.environ.get("RAY_AUTH_MODE", "").lower()
    if mode == "disabled":
        return None, "RAY_AUTH_MODE=disabled"
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "RAY_AUTH_TOKEN"
    env_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(env_path).expanduser() if env_path else Path.home() / ".ray" / "auth_token"
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token, str(path)
    return None, f"no RAY_AUTH_TOKEN and no token file at {path}"


def _call(address: str | None, action):
    """Run ``action(client)`` on a ``JobSubmissionClient`` of the head, turning an unreachable head, a
    missing or wrong token and an unknown job id into a ``SubmitError`` that says what is wrong."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    token, source = find_token()
    client = None
    try:
        client = JobSubmissionClient(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        return action(client)
    except AuthenticationError as error:
        detail = str(error)
        if token is None or "401" in detail or "Missing" in detail:
            raise SubmitError(
                f"the Ray head at {url} requires an authentication token and none was sent ({source}). "
                "Export RAY_AUTH_TOKEN=<token> (on the head: `ray get-auth-token`) or point "
                "RAY_AUTH_TOKEN_PATH at the token file."
            ) from None
        raise SubmitError(
            f"the Ray head at {url} rejected the token from {source} (403): it is not this cluster's token."
        ) from None
    except ConnectionError as error:
        if client is not None:
            raise SubmitError(f"lost the connection to the Ray head at {url}: {error}") from None
        raise SubmitError(
            f"cannot reach the Ray head at {url}: {error}. Is the head running "
            "(`ray start --head --dashboard-host 0.0.0.0`) and is the dashboard port reachable from here?"
        ) from None
    except RuntimeError as error:
        if client is not None and ("404" in str(error) or "does not exist" in str(error)):
            raise SubmitError(f"{error}") from None
        raise


def runtime_env(working_dir: Path | None = None) -> dict:
    """The job's runtime environment: ships the ``degtrans`` package (and ``working_dir`` if given)."""
    env: dict = {
        "py_modules": [str(Path(degtrans.__file__).parent)],
        "env_vars": {"RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0"},
    }
    if working_dir is not None:
        if not working_dir.is_dir():
            raise SubmitError(f"--working-dir {working_dir}: not a directory")
        env["working_dir"] = str(working_dir)
        env["excludes"] = [".venv", ".git", "__pycache__", "*.parquet", "demo"]
    return env


def entrypoint(command: Sequence[str]) -> str:
    """The shell command the job runs: ``python -m degtrans COMMAND...`` (the package travels with the job,
    so the script need not be installed on the cluster; inside the job ``ensure_ray`` joins the cluster
    through ``RAY_ADDRESS``)."""
    if not command:
        raise SubmitError(
            "nothing to submit: give a subcommand after '--', e.g. degtrans submit -- simulate ..."
        )
    if command[0] in ("submit", "demo"):
        raise SubmitError(f"'degtrans {command[0]}' cannot be submitted as a job")
    return "python -m degtrans " + " ".join(shlex.quote(part) for part in command)


def wait_job(job_id: str, address: str | None = None, *, timeout_s: float | None = None) -> JobOutcome:
    """Tail a job's logs to stdout until it reaches a terminal state; returns its outcome."""

    async def tail(client) -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    def follow(client) -> None:
        try:
            asyncio.run(asyncio.wait_for(tail(client), timeout_s))
        except TimeoutError:
            client.stop_job(job_id)
            raise SubmitError(f"job {job_id} did not finish within {timeout_s:.0f} s; stopped it") from None

    _call(address, follow)
    return job_status(job_id, address, settle_s=10.0)


def job_status(job_id: str, address: str | None = None, *, settle_s: float = 0.0) -> JobOutcome:
    """The job's status and exit code (waits up to ``settle_s`` for a terminal state)."""
    deadline = time.monotonic() + settle_s
    while True:
        info = _call(address, lambda c: c.get_job_info(job_id))
        status = str(getattr(info.status, "value", info.status))
        if status in TERMINAL or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    code = getattr(info, "driver_exit_code", None)
    if code is None:
        code = {"SUCCEEDED": 0, "STOPPED": 130}.get(status, 1 if status == "FAILED" else 0)
    return JobOutcome(job_id, status, int(code))


def run_submit(
    words: Sequence[str],
    address: str | None = None,
    *,
    wait: bool = True,
    working_dir: Path | None = None,
    submission_id: str | None = None,
    timeout_s: float | None = None,
) -> int:
    """``degtrans submit WORDS``: ``status|logs|stop ID`` manage a job, ``[--] COMMAND...`` submits
    ``degtrans COMMAND...`` (e.g. ``simulate --images ...``) as a Ray job.

    Args:
        address: the head's dashboard URL (``http://HEAD:8265``); default ``RAY_ADDRESS`` or local.
        wait: tail the job's logs until it ends; otherwise print its id right after submission.
        working_dir: a local directory to upload as the job's working directory (relative paths).
        submission_id: a job id (unique on the cluster); default ``degtrans-<command>-<time>-<hex>``.
        timeout_s: stop the job and raise after this many seconds of waiting.

    Returns:
        The exit status of the command line: the job's driver's when waiting for it (0 on success; 1
        when the job failed without one; 130 when stopped), else 0.
    """
    words = list(words)
    if words[:1] in (["status"], ["logs"], ["stop"]):
        if len(words) != 2:
            raise SubmitError(f"usage: degtrans submit {words[0]} JOB_ID")
        action, job_id = words
        if action == "status":
            outcome = job_status(job_id, address)
            print(f"{outcome.submission_id}: {outcome.status} (exit code {outcome.exit_code})")
        elif action == "logs":
            print(_call(address, lambda c: c.get_job_logs(job_id)), end="")
        else:
            stopped = bool(_call(address, lambda c: c.stop_job(job_id)))  # True if it was running
            print(f"{job_id}: {'stop requested' if stopped else 'not running'}")
        return 0
    command = words[1:] if words[:1] == ["--"] else words
    entry = entrypoint(command)
    job_id = submission_id or f"degtrans-{command[0]}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    env = runtime_env(working_dir)
    submitted = _call(
        address, lambda c: c.submit_job(entrypoint=entry, runtime_env=env, submission_id=job_id)
    )
    if not wait:
        print(submitted)
        return 0
    outcome = wait_job(submitted, address, timeout_s=timeout_s)
    print(f"job {outcome.submission_id}: {outcome.status} (exit {outcome.exit_code})", file=sys.stderr)
    return outcome.exit_code
