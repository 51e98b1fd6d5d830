"""A real multi-node Ray cluster on one machine: placement, object transfer and a node dying mid-run.

Three nodes (``ray.cluster_utils.Cluster``: a head and two workers, each its own raylet and object
store, talking over loopback) shaped like a small GPU cluster with logical resources:

    head      1 CPU, 1 GPU   (the driver connects here)
    worker a  3 CPUs          (killed part-way through the synthesis)
    worker b  3 CPUs, 1 GPU

so each placement below has exactly one answer: 0.5-GPU tile actors fit only on the head and b
(one on the head, its single CPU; two on b, its GPU); 2-CPU training workers fit only on a and b,
one each, leaving a CPU per node for Ray Data. The shared ``ray_session`` is shut down first (the
driver can join one Ray at a time); the next test that needs it starts it again.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch

from degtrans.config import ActorsConfig, CalibrateConfig, SimulateConfig, WorkersConfig
from tests.cluster.helpers import dataset_rows, synthesis_inputs, tiny_dataset, tiny_train_config

pytestmark = pytest.mark.slow

SIM = SimulateConfig(patch_size=16, patches_per_image=3, rows_per_file=2, row_group_rows=2)


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster
    from ray.data import DataContext

    if ray.is_initialized():
        ray.shutdown()
    start = time.perf_counter()
    small = {"object_store_memory": 96 * 1024 * 1024}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "num_gpus": 1,
            "include_dashboard": True,
            "dashboard_port": None,
            **small,
        },
    )
    nodes = {
        "a": cluster.add_node(num_cpus=3, **small),
        "b": cluster.add_node(num_cpus=3, num_gpus=1, **small),
    }
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    DataContext.get_current().enable_progress_bars = False
    ids = {name: node.node_id for name, node in nodes.items()}
    ids["head"] = cluster.head_node.node_id
    print(f"cluster up in {time.perf_counter() - start:.1f} s")
    yield cluster, nodes, ids
    ray.shutdown()
    cluster.shutdown()


def _node_of(state_rows) -> list[str]:
    return [row.node_id for row in state_rows]


def _shard_tasks() -> list:
    """Every attempt of every shard task so far (Ray's State API)."""
    from ray.util.state import list_tasks

    filters = [("func_or_class_name", "=", "_write_shard_task")]
    return list_tasks(address=_state_address(), filters=filters, detail=True)


def _state_address() -> str:
    """This driver's cluster (another session's Ray on the machine may be the 'current' one)."""
    import ray

    return ray.get_runtime_context().gcs_address


def test_tile_actors_with_half_gpus_land_on_both_gpu_nodes(cluster, tmp_path):
    import ray
    from ray.util.state import list_actors

    from degtrans.calibrate.fit import FitProblem
    from degtrans.calibrate.pipeline import local_mapper, solve_field
    from degtrans.cluster.calibrate import ray_mapper, ray_shards, start_fitters
    from degtrans.kernels import sv_conv2d
    from degtrans.testing.synthetic import gaussian_field

    _, _, ids = cluster
    size, grid, k = 48, (2, 2), 5
    truth = gaussian_field(grid, k, (size, size), sigma_centre=0.8, sigma_corner=1.2)
    targets = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        photos = sv_conv2d(torch.from_numpy(targets), torch.from_numpy(truth.psfs)).numpy()
    masks = np.zeros((2, size, size), bool)
    masks[:, k // 2 : -(k // 2), k // 2 : -(k // 2)] = True
    problem = FitProblem(targets, photos, masks, ("a", "b"), grid, k)
    config = CalibrateConfig(rows=2, cols=2, psf_size=k, ray=ActorsConfig(actors=3, gpus_per_actor=0.5))
    actors = start_fitters(problem, config)
    try:
        solution = solve_field(
            problem, config, ray_mapper(actors, config, progress=False), ray_shards(actors)
        )
        fitters = list_actors(
            address=_state_address(), filters=[("class_name", "=", "TileFitter"), ("state", "=", "ALIVE")]
        )
        ids_alive = {actor._actor_id.hex() for actor in actors}
        placed = sorted(_node_of(a for a in fitters if a.actor_id in ids_alive))
    finally:
        for actor in actors:
            ray.kill(actor)
    assert placed == sorted([ids["head"], ids["b"], ids["b"]])  # never on a: it has no GPU
    assert not solution.failed
    # The problem crossed the object store to two nodes, the joint solve ran on three blocks of the
    # frame (one per actor, only PSFs on the wire) and came back as the one-process solve's field.
    local = solve_field(problem, config, local_mapper(problem, config, progress=False))
    relative = np.linalg.norm(solution.psfs - local.psfs) / np.linalg.norm(local.psfs)
    assert relative < 0.002, relative


def test_two_train_workers_spread_over_both_worker_nodes(cluster, tmp_path):
    from ray.util.state import list_actors

    from degtrans.cluster.train import train_distributed

    _, _, ids = cluster
    data = tiny_dataset(tmp_path / "data")
    config = tiny_train_config(epochs=1, ray=WorkersConfig(workers=2, cpus_per_worker=2, max_failures=0))
    summary = train_distributed(data, tmp_path / "run", config)
    workers = list_actors(address=_state_address(), filters=[("class_name", "=", "RayTrainWorker")])
    assert sorted(_node_of(workers)) == sorted([ids["a"], ids["b"]])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0] and all(r["workers"] == 2 for r in records)
    assert summary["best_psnr"] == max(r["val_psnr"] for r in records)


def test_gpu_shard_tasks_request_half_a_gpu_and_land_on_gpu_nodes_only(cluster, tmp_path):
    from degtrans.cluster.synthesize import synthesize_dataset

    _, _, ids = cluster
    images, fields = synthesis_inputs(tmp_path, images=2)
    config = dataclasses.replace(SIM, rows_per_file=1, gpus_per_worker=0.5)
    summary = synthesize_dataset(images, fields, tmp_path / "gpu", config)
    assert summary["pairs"] == 2 * 2 * 3
    deadline = time.monotonic() + 30
    while True:
        tasks = _shard_tasks()
        gpu_tasks = [t for t in tasks if t.required_resources.get("GPU") == 0.5]
        # Task events reach the State API with a delay: wait until every task has its final state.
        settled = all(t.state == "FINISHED" and t.node_id for t in gpu_tasks)
        if (len(gpu_tasks) >= summary["shards"] and settled) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(gpu_tasks) == summary["shards"]
    assert all(t.required_resources.get("CPU") == 1 for t in gpu_tasks)
    assert {t.node_id for t in gpu_tasks} <= {ids["head"], ids["b"]}  # a has no GPU
    # No CUDA behind the logical GPUs: the tasks fell back to the CPU path, same bytes as without GPUs.
    cpu = synthesize_dataset(images, fields, tmp_path / "cpu", dataclasses.replace(SIM, rows_per_file=1))
    assert dataset_rows(tmp_path / "gpu")[1].equals(dataset_rows(tmp_path / "cpu")[1]) and cpu["pairs"] == 12


def test_synthesis_survives_a_killed_worker_node(cluster, tmp_path):
    import ray

    from degtrans.cluster.synthesize import synthesize_dataset
    from degtrans.simulate.dataset import build_dataset

    handle, nodes, ids = cluster
    images, fields = synthesis_inputs(tmp_path, images=4)
    out = tmp_path / "cluster"
    killed: list[int] = []

    done: list[int] = []

    def kill_worker_a(result):
        """Kill a (its raylet and workers) once a shard is seen running on it, or half-way at the latest."""
        done.append(result.index)
        if killed:
            return
        running = [t for t in _shard_tasks() if t.state == "RUNNING" and t.node_id == ids["a"]]
        if running or len(done) >= 6:
            killed.append(result.index)
            handle.remove_node(nodes["a"], allow_graceful=False)

    # Four shards in flight over three nodes: a dies with a shard running on it.
    try:
        synthesize_dataset(images, fields, out, SIM, workers=4, on_shard=kill_worker_a)
    except ray.exceptions.RayError:
        pass  # the run may fail once its retries are spent; the rerun below must then finish it
    assert killed and not nodes["a"].any_processes_alive()
    summary = synthesize_dataset(images, fields, out, SIM, workers=4)
    manifest, rows = dataset_rows(out)
    ids_written = rows.column("sample_id").to_pylist()
    expected = {f"{c}/img{i:04d}/p{p:02d}" for c in ("camA", "camB") for i in range(4) for p in range(3)}
    assert len(ids_written) == len(set(ids_written)) and set(ids_written) == expected
    assert manifest["samples"] == len(expected) and (out / "_SUCCESS").exists()
    assert summary["noop"] or summary["pairs_written"] < len(expected)
    # Where the State API saw the shard running on a in time, Ray re-ran it on a surviving node (the task
    # events of a itself died with it); the head and b both wrote shards.
    deadline = time.monotonic() + 10
    while True:
        tasks = [t for t in _shard_tasks() if not t.required_resources.get("GPU")]
        retried = [t for t in tasks if t.attempt_number > 0 and t.state == "FINISHED"]
        if retried or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert all(t.node_id in (ids["b"], ids["head"]) for t in retried)
    assert {ids["b"], ids["head"]} <= set(_node_of(tasks))
    # Scheduling, a dead node and retries never change the data: the bytes of a serial run.
    serial = build_dataset(images, fields, tmp_path / "serial", SIM)
    assert serial["pairs"] == len(expected)
    serial_manifest, serial_rows = dataset_rows(tmp_path / "serial")
    assert rows.equals(serial_rows)
    assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in serial_manifest["shards"]]
