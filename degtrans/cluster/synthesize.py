"""``degtrans simulate`` on Ray: one task per missing shard, local embedded Ray or a cluster.

The plan, the shard writer and the manifest live in ``degtrans.simulate`` (``plan``, ``writer``,
``dataset``); Ray only runs ``write_shard`` on the workers. Tasks are retried by Ray (a retry rewrites
the same shard under a fresh temporary name, then renames: idempotent), at most ``workers`` run at
once, and results come back as they finish so the progress bar moves and a failure stops the run early.

``gpus_per_worker > 0`` asks Ray for that fraction of a GPU per shard task (``num_gpus``): such a task
develops each row group on the GPU in one pass (``degtrans.simulate.batch``: batched blur and ISP, CPU
threads decoding and encoding beside it); on a node whose GPUs are only logical (no CUDA device) it
falls back to the CPU path with a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ray
import torch

from degtrans.cluster.session import ensure_ray
from degtrans.config import SimulateConfig
from degtrans.errors import InputError
from degtrans.simulate.dataset import build_dataset
from degtrans.simulate.plan import ShardSpec
from degtrans.simulate.writer import ShardResult, write_shard

log = logging.getLogger(__name__)


@ray.remote(num_cpus=1, max_retries=2)
def _write_shard_task(spec: ShardSpec, gpus: float = 0.0) -> ShardResult:
    return write_shard(spec, device=shard_device(gpus))


def shard_device(gpus: float) -> str:
    """``"cuda"`` for a task that was given a GPU and can see one, else ``"cpu"``."""
    if gpus <= 0:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    log.warning("shard task was given %.2f GPU but sees no CUDA device: using the CPU path", gpus)
    return "cpu"


def task_options(gpus_per_worker: float) -> dict[str, float]:
    """The Ray options of one shard task: a CPU, and ``gpus_per_worker`` of a GPU when asked."""
    if gpus_per_worker < 0:
        raise InputError(
            f"simulate.gpus_per_worker (--gpus-per-worker): expected >= 0, got {gpus_per_worker}"
        )
    return {"num_cpus": 1, "num_gpus": gpus_per_worker}


def ray_map(
    workers: int | None, address: str | None = None, gpus_per_worker: float = 0.0
) -> Callable[[Sequence[ShardSpec]], Iterator[ShardResult]]:
    """Run shard specs as Ray tasks, at most ``workers`` in flight (default: the cluster's CPUs, or with
    ``gpus_per_worker`` the tasks its GPUs hold), yielding results as they finish. Ray starts only when
    there is a shard to write."""
    options = task_options(gpus_per_worker)
    task = _write_shard_task.options(**options)

    def run(specs: Sequence[ShardSpec]) -> Iterator[ShardResult]:
        if not specs:
            return
        ensure_ray(address)
        resources = ray.cluster_resources()
        count = workers or max(1, int(resources.get("CPU", 1)))
        if gpus_per_worker > 0 and not workers:
            count = max(1, min(count, int(resources.get("GPU", 0) / gpus_per_worker)))
        log.info("writing %d shard(s) with %d Ray worker(s), %s", len(specs), count, options)
        pending = list(specs)
        in_flight: list[ray.ObjectRef] = []
        try:
            while pending or in_flight:
                while pending and len(in_flight) < count:
                    in_flight.append(task.remote(pending.pop(0), gpus_per_worker))
                done, in_flight = ray.wait(in_flight, num_returns=1)
                yield ray.get(done[0])
        finally:
            # A failure (or the caller stopping early) cancels what has not finished; shards already
            # renamed into place stay and are reused by the next run.
            for ref in in_flight:
                ray.cancel(ref, force=True)

    return run


def synthesize_dataset(
    images: list[Path] | Path,
    fields: list[Path] | None,
    output: Path,
    config: SimulateConfig,
    address: str | None = None,
    workers: int | None = None,
    profiles: Sequence[str | os.PathLike] | None = None,
    on_shard: Callable[[ShardResult], None] | None = None,
    catalogue: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Synthesise a pair dataset with Ray (see ``degtrans.simulate.dataset.build_dataset``).

    Args:
        images: folder or files of clean images (or Parquet files of encoded images).
        fields: PSF field files, one camera each (``None`` with ``catalogue``).
        output: dataset directory (``shards/``, ``fields/``, ``manifest.json``, ``_SUCCESS``).
        config: the ``[simulate]`` section.
        address: ``None`` for an embedded local Ray, else a cluster address.
        workers: shards written at once; default ``config.workers`` or, if 0, the cluster's CPUs.
        profiles: camera profile per field (bundled name, TOML or RAW), or one for all.
        on_shard: called after each finished shard.
        catalogue: a camera catalogue (TOML file or directory) instead of ``fields``.

    Returns:
        The run summary (pairs, pairs written, MPix, pairs/s, skipped, shards, noop).
    """
    mapper = ray_map(workers or config.workers or None, address, config.gpus_per_worker)
    return build_dataset(
        images, fields, output, config, profiles=profiles, catalogue=catalogue, map_shards=mapper,
        on_shard=on_shard,
    )  # fmt: skip
