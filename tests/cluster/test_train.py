"""Ray Train path: every [train] field reaches the one loop (as locally), and a two-worker CPU run
survives a killed worker and resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch

from degtrans.config import OptimConfig, WorkersConfig
from degtrans.restore.checkpoint import load_checkpoint
from degtrans.restore.data import PairReader
from tests.cluster.helpers import tiny_dataset, tiny_train_config

RAY = [pytest.mark.ray, pytest.mark.slow]


def _input_losses(data, val_fraction: float, split: str) -> dict[str, float]:
    """L2 and L1 between the degraded and clean patches of ``split``: an identity network's losses."""
    batches = list(PairReader(data, val_fraction=val_fraction).batches(split, 64, shuffle=False))
    error = torch.cat([b["degraded"] for b in batches]) - torch.cat([b["clean"] for b in batches])
    return {"l2": float(error.square().mean()), "l1": float(error.abs().mean())}


@pytest.mark.parametrize("path", ["local", pytest.param("ray", marks=RAY)])
def test_every_train_field_reaches_the_loop(path, tmp_path, request):
    """``train.optim.loss = l2`` is the loss both paths train and validate with; the loop holds the whole
    config.

    A zero learning rate keeps the untrained FOV-KPN the identity, so the epoch's losses are those of
    the degraded inputs; one worker sees the whole training split.
    """
    from degtrans.cluster.train import train_distributed
    from degtrans.restore.loop import train_local

    data = tiny_dataset(tmp_path / "data", frames=2)
    run_dir = tmp_path / "run"
    config = tiny_train_config(
        epochs=1,
        batch_size=5,
        seed=3,
        ray=WorkersConfig(workers=1),
        optim=OptimConfig(learning_rate=0.0, loss="l2"),
    )
    if path == "ray":
        request.getfixturevalue("ray_session")
        train_distributed(data, run_dir, config)
    else:
        train_local(data, run_dir, config, progress=False)
    (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train, val = (_input_losses(data, config.val_fraction, split) for split in ("train", "val"))
    assert train["l2"] < train["l1"] / 2  # the two losses are far apart on this data
    assert record["train_loss"] == pytest.approx(train["l2"], rel=1e-5)
    assert record["val_loss"] == pytest.approx(val["l2"], rel=1e-5)
    # The checkpoint stores the config the loop ran with: every field arrived, not only the loss.
    assert load_checkpoint(run_dir / "last.pt")["train_config"] == config


def _epochs_done(run_dir) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _kill_one_worker_mid_run(run_dir, killed: list, stop: threading.Event) -> None:
    """SIGKILL one Ray Train worker process once Ray has registered a checkpoint.

    The worker pids are looked up beforehand (the State API takes a while) so the kill lands within
    milliseconds of the controller's checkpoint snapshot appearing in ``RUN/ray/train/``.
    """
    import ray
    from ray.util.state import list_actors

    gcs = ray.get_runtime_context().gcs_address  # this session's cluster, not whatever RAY_ADDRESS names
    alive_workers = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
    pids: list[int] = []
    while not stop.is_set() and not pids:
        alive = list_actors(address=gcs, filters=alive_workers)
        pids = [actor.pid for actor in alive]
        time.sleep(0.2)
    snapshot = run_dir / "ray" / "train" / "checkpoint_manager_snapshot.json"
    while not stop.is_set():
        if snapshot.exists() and _epochs_done(run_dir) >= 1:
            os.kill(pids[-1], signal.SIGKILL)
            killed.append((pids[-1], _epochs_done(run_dir)))
            return
        time.sleep(0.02)


@pytest.mark.ray
@pytest.mark.slow
def test_two_workers_survive_a_killed_worker(ray_session, tmp_path):
    from degtrans.cluster.train import train_distributed

    data = tiny_dataset(tmp_path / "data", frames=8)  # epochs of a second or two: time to kill one
    run_dir = tmp_path / "run"
    config = tiny_train_config(epochs=5, ray=WorkersConfig(max_failures=2))
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_one_worker_mid_run, args=(run_dir, killed, stop))
    killer.start()
    try:
        summary = train_distributed(data, run_dir, config)
    finally:
        stop.set()
        killer.join()
    assert killed and killed[0][1] < config.epochs, f"no worker was killed mid-run: {killed}"
    # The final worker group resumed from a reported checkpoint, not from scratch.
    assert summary["start_epoch"] >= 1
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4]  # each epoch exactly once despite the restart
    assert all(r["workers"] == 2 for r in records)
    # The same RUN/ layout as the local path, and checkpoints the restore stage can load.
    for name in ("last.pt", "best.pt", "config.json", "curves.png"):
        assert (run_dir / name).exists(), name
    state = load_checkpoint(run_dir / "last.pt")
    assert state["epoch"] == 4 and state["train_config"] == config
    assert summary["best_psnr"] == max(r["val_psnr"] for r in records)
    # Training helped: the loss went down from the first epoch.
    assert records[-1]["train_loss"] < records[0]["train_loss"]


def test_ray_dataset_carries_the_noise_columns_the_local_reader_reads(ray_session, tmp_path):
    from degtrans.cluster.train import pair_dataset
    from degtrans.pairs import NOISE_COLUMNS

    data = tiny_dataset(tmp_path)
    names = pair_dataset(data, "train", 0.25).schema().names
    assert set(NOISE_COLUMNS) & set(names) == {"noise_read"}  # what the toy writer stores
    assert {"sample_id", "clean", "degraded"} <= set(names)
