"""Distributed training with Ray Train: ``restore.loop.train_run`` inside a ``TorchTrainer``.

The loop is ``train_local``'s own function (``train_run`` over ``restore.loop.fit``). Ray supplies
only what differs: each worker's batches come from its shard of a ``ray.data.read_parquet`` over the
manifest's shards, the model is wrapped for DDP (gloo on CPU, NCCL on GPU), a restarted worker
group resumes from the last reported checkpoint, and every rank reports each epoch (rank 0 with a
checkpoint). Rank 0 writes the same ``RUN/`` layout as the local path (``last.pt``, ``best.pt``,
``metrics.jsonl``, ``config.json``, ``curves.png``); Ray's own run state lives in ``RUN/ray/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.train
import torch
from ray.data.collate_fn import ArrowBatchCollateFn
from ray.train.torch import TorchTrainer, prepare_model

from degtrans.cluster.session import ensure_ray
from degtrans.config import TrainConfig
from degtrans.errors import DegtransError, InputError
from degtrans.restore.data import (
    PairReader,
    batch_columns,
    load_fields,
    read_manifest,
    rows_to_batch,
    split_of,
)
from degtrans.restore.loop import train_reader, train_run
from degtrans.restore.models import model_spec
from degtrans.restore.pretrained import check_init

log = logging.getLogger(__name__)

# Datasets whose shards take at most this fraction of the free object store are cached there
# (decoded rows take a few times their compressed size on disk).
CACHE_FRACTION = 0.1


def _keep_split(table: pa.Table, split: str, val_fraction: float, fallback: str | None) -> pa.Table:
    """Rows of ``table`` in ``split`` (by ``split_of`` on ``sample_id``, as the local reader does)."""
    mask = [split_of(s, val_fraction, fallback) == split for s in table.column("sample_id").to_pylist()]
    return table.filter(pa.array(mask, type=pa.bool_()))


def pair_dataset(data_dir: Path, split: str, val_fraction: float) -> ray.data.Dataset:
    """A Ray Dataset of one split of ``data_dir``, over exactly the shards the manifest lists."""
    fallback = PairReader(data_dir, val_fraction=val_fraction).fallback  # the local reader's split
    manifest = read_manifest(data_dir)
    paths = [str((data_dir / shard["path"]).resolve()) for shard in manifest["shards"]]
    # select_columns is pushed down into the Parquet read (column projection); the noise and ISP
    # columns reach the non-blind models as in the local reader.
    columns = batch_columns(pq.read_schema(paths[0]).names)
    ds = ray.data.read_parquet(paths, shuffle="files").select_columns(columns)
    ds = ds.map_batches(
        _keep_split,
        batch_format="pyarrow",
        fn_kwargs={"split": split, "val_fraction": val_fraction, "fallback": fallback},
    )
    # Each epoch re-runs the read pipeline (seconds of fixed cost); a dataset that fits easily in the
    # object store is read once and kept there instead.
    on_disk = sum(Path(p).stat().st_size for p in paths)
    if on_disk <= CACHE_FRACTION * ray.available_resources().get("object_store_memory", 0):
        ds = ds.materialize()
    return ds


class PairCollate(ArrowBatchCollateFn):
    """Ray Data Arrow batches -> the loop's batch dicts, as the local reader makes them.

    Arrow in (not numpy): the pixel lists are flattened without passing through Python objects.
    """

    def __init__(self, fields: dict | None) -> None:
        self.fields = fields

    def __call__(self, batch: pa.Table) -> dict[str, Any]:
        return rows_to_batch({name: batch.column(name) for name in batch.column_names}, self.fields)


def report_to_ray(metrics: dict[str, Any], checkpoint_file: Path | None) -> None:
    """Ray: every rank reports each epoch; rank 0 attaches a copy of ``last.pt``, the checkpoint a
    restarted worker group resumes from (Ray keeps its own copy, so ``RUN/last.pt`` may move on)."""
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if checkpoint_file is not None:
            shutil.copy2(checkpoint_file, Path(directory) / "last.pt")
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """The body every Ray Train worker runs: ``train_run`` with this worker's shard, DDP, Ray's checkpoint and
    ``report_to_ray``. ``loop_config["config"]`` is the whole ``TrainConfig`` (Ray pickles it)."""
    config: TrainConfig = loop_config["config"]
    data_dir: Path = loop_config["data_dir"]
    context = ray.train.get_context()
    main = context.get_world_rank() == 0
    # Ray sets OMP_NUM_THREADS to the worker's CPUs; torch reads it only at start-up, so apply it here.
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", config.ray.cpus_per_worker))))
    with_psf = model_spec(config.model).needs_psf
    collate = PairCollate(load_fields(data_dir, read_manifest(data_dir)) if with_psf else None)
    shard = ray.train.get_dataset_shard("train")  # this worker's part of the Parquet stream

    def train_batches(epoch: int) -> Iterable[dict[str, Any]]:
        return shard.iter_torch_batches(
            batch_size=config.batch_size,
            collate_fn=collate,
            local_shuffle_buffer_size=config.shuffle_buffer or None,
            local_shuffle_seed=config.seed * 1000 + epoch,
        )

    checkpoint = ray.train.get_checkpoint()  # set when a restarted worker group resumes
    with checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext() as resumed:
        summary = train_run(
            config,
            loop_config["run_dir"],
            train_batches,
            loop_config["train_samples"],
            train_reader(data_dir, config) if main else None,
            wrap=prepare_model,  # DDP, and the device Ray gave this worker
            world_size=context.get_world_size(),
            resume_from=Path(resumed) / "last.pt" if resumed is not None else None,
            report=report_to_ray,
        )
    # Train V2 hands rank 0's return value back to the driver (Result.return_value).
    return summary if main else None


def build_trainer(
    data_dir: Path,
    run_dir: Path,
    config: TrainConfig,
    *,
    name: str = "train",
    callbacks: Sequence[Any] = (),
) -> TorchTrainer:
    """The ``TorchTrainer`` of one run: ``config.ray.workers`` workers, each with ``cpus_per_worker`` CPUs
    and ``gpus_per_worker`` GPUs, ``max_failures`` restarts from the last checkpoint.

    ``name`` keys Ray's run state in ``run_dir/ray/``: a rerun with the same name resumes from the
    last checkpoint there (as ``train_local`` resumes from ``last.pt``).
    """
    data_dir, run_dir = Path(data_dir).resolve(), Path(run_dir).resolve()
    if config.ray.workers < 1:
        raise InputError(f"train.ray.workers: expected >= 1, got {config.ray.workers}")
    run_dir.mkdir(parents=True, exist_ok=True)
    train_samples = train_reader(data_dir, config).count("train")
    resources = {"CPU": float(config.ray.cpus_per_worker)}
    if config.ray.gpus_per_worker > 0:
        resources["GPU"] = float(config.ray.gpus_per_worker)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config,
            "data_dir": data_dir,
            "run_dir": run_dir,
            "train_samples": train_samples,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.ray.workers,
            use_gpu=config.ray.gpus_per_worker > 0,
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(run_dir / "ray"),
            failure_config=ray.train.FailureConfig(max_failures=config.ray.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
        ),
        datasets={"train": pair_dataset(data_dir, "train", config.val_fraction)},
    )


def train_distributed(
    data_dir: Path, run_dir: Path, config: TrainConfig, address: str | None = None
) -> dict[str, Any]:
    """Train ``config.model`` on ``data_dir`` with Ray Train; ``run_dir`` gets the local path's layout.

    Args:
        data_dir: a pair dataset (``manifest.json``, ``shards/``, ``_SUCCESS``).
        run_dir: output directory (``last.pt``, ``best.pt``, ``metrics.jsonl``, ``config.json``,
            ``curves.png``; Ray's run state in ``ray/``). A rerun resumes from its last checkpoint.
        config: the ``[train]`` section; ``workers``, ``cpus_per_worker``, ``gpus_per_worker`` and
            ``max_failures`` shape the worker group.
        address: ``None`` for an embedded local Ray, else a cluster address (``auto``, ``ray://...``).

    Returns:
        Rank 0's ``train_run`` summary (``start_epoch``: where the final worker group started, > 0
        after a restart) and the ``checkpoint`` Ray kept last.
    """
    check_init(config)  # here, not in each worker after Ray started (and once per restart)
    ensure_ray(address)
    trainer = build_trainer(Path(data_dir), Path(run_dir), config)
    result = trainer.fit()
    if result.error is not None:
        raise DegtransError(f"{run_dir}: distributed training failed: {result.error}") from result.error
    summary = dict(result.return_value or {})
    summary["checkpoint"] = result.checkpoint.path if result.checkpoint is not None else None
    return summary
