"""Distributed training with Ray Train: the local loop of ``degtrans.restore.loop`` inside a ``TorchTrainer``.

The loop is ``train_local``'s, step for step; the lines marked ``# Ray`` are the only ones that
differ: the model is wrapped for DDP (gloo on CPU, NCCL on GPU), each worker's batches come from
its shard of a ``ray.data.read_parquet`` over the manifest's shards, a restarted worker group
resumes from the last reported checkpoint, and rank 0 reports each epoch's metrics with a
checkpoint. Rank 0 also writes the same ``RUN/`` layout as the local path (``last.pt``,
``best.pt``, ``metrics.jsonl``, ``config.json``, ``curves.png``); Ray's own run state lives in
``RUN/ray/``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import ray.train
import torch
from ray.data.collate_fn import ArrowBatchCollateFn
from ray.train.torch import TorchTrainer, prepare_model

from degtrans.atomic import write_atomic
from degtrans.cluster.session import ensure_ray
from degtrans.config import TrainConfig, to_dict, write_resolved
from degtrans.metrics import psnr
from degtrans.restore.data import (
    META_COLUMNS,
    PIXEL_COLUMNS,
    PairReader,
    load_fields,
    read_manifest,
    rows_to_batch,
    split_of,
)
from degtrans.restore.loop import (
    MODEL_CLASSES,
    build_model,
    config_from_dict,
    evaluate,
    load_checkpoint,
    make_optimizer,
    make_scheduler,
    record_epoch,
    train_epoch,
)

log = logging.getLogger(__name__)

# Datasets whose shards take at most this fraction of the free object store are cached there
# (decoded rows take a few times their compressed size on disk).
CACHE_FRACTION = 0.1


def _keep_split(table: pa.Table, split: str, val_fraction: float) -> pa.Table:
    """Rows of ``table`` in ``split`` (by ``split_of`` on ``sample_id``, as the local reader does)."""
    mask = [split_of(s, val_fraction) == split for s in table.column("sample_id").to_pylist()]
    return table.filter(pa.array(mask, type=pa.bool_()))


def pair_dataset(data_dir: Path, split: str, val_fraction: float) -> ray.data.Dataset:
    """A Ray Dataset of one split of ``data_dir``, over exactly the shards the manifest lists."""
    manifest = read_manifest(data_dir)
    paths = [str((data_dir / shard["path"]).resolve()) for shard in manifest["shards"]]
    # select_columns is pushed down into the Parquet read (column projection).
    ds = ray.data.read_parquet(paths, shuffle="files").select_columns([*META_COLUMNS, *PIXEL_COLUMNS])
    ds = ds.map_batches(
        _keep_split, batch_format="pyarrow", fn_kwargs={"split": split, "val_fraction": val_fraction}
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


def _identity_psnr(reader: PairReader, batch_size: int) -> float:
    """Mean PSNR (dB) of the degraded inputs of the validation split: the 'do nothing' baseline."""
    total, count = 0.0, 0
    for batch in reader.batches("val", batch_size, shuffle=False):
        total += float(psnr(batch["degraded"], batch["clean"]).sum())
        count += batch["clean"].shape[0]
    return total / max(count, 1)


def _rewrite_metrics(path: Path, before_epoch: int) -> None:
    """Keep the records of epochs ``< before_epoch``: a resumed run re-runs the later ones."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip()]
    keep = [line for line in keep if json.loads(line)["epoch"] < before_epoch]
    write_atomic(path, "".join(line + "\n" for line in keep))


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """The body every Ray Train worker runs (``train_local`` with the ``# Ray`` lines)."""
    config = config_from_dict(loop_config["train"], "train_loop_config")
    data_dir, run_dir = Path(loop_config["data_dir"]), Path(loop_config["run_dir"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    # Ray sets OMP_NUM_THREADS to the worker's CPUs; torch reads it only at start-up, so apply it here.
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", config.cpus_per_worker))))
    model_cls = MODEL_CLASSES[config.model]
    fields = load_fields(data_dir, read_manifest(data_dir)) if model_cls.needs_psf else None
    steps = max(1, math.ceil(loop_config["train_samples"] / (config.batch_size * context.get_world_size())))
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    net = build_model(config)
    model = prepare_model(net)  # Ray: DDP, and the device Ray gave this worker
    model.needs_psf = model_cls.needs_psf  # the DDP wrapper hides the class attribute the loop reads
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, steps * config.epochs)
    scaler = torch.amp.GradScaler("cuda") if (device.type == "cuda" and config.amp) else None
    last, best, metrics_path = run_dir / "last.pt", run_dir / "best.pt", run_dir / "metrics.jsonl"
    start_epoch, best_psnr, best_epoch = 0, -math.inf, -1
    checkpoint = ray.train.get_checkpoint()  # Ray: set when a restarted worker group resumes
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(Path(directory) / "last.pt", net, optimizer, scheduler, device)
        start_epoch = state["epoch"] + 1
        best_psnr = state["extra"].get("best_psnr", -math.inf)
        best_epoch = state["extra"].get("best_epoch", -1)
    reader = PairReader(data_dir, val_fraction=config.val_fraction, with_psf=fields is not None)
    baseline = _identity_psnr(reader, config.batch_size) if rank == 0 else math.nan
    if rank == 0:
        _rewrite_metrics(metrics_path, start_epoch)
    shard = ray.train.get_dataset_shard("train")  # Ray: this worker's part of the Parquet stream
    record: dict[str, Any] = {}
    for epoch in range(start_epoch, config.epochs):
        batches = shard.iter_torch_batches(
            batch_size=config.batch_size,
            collate_fn=PairCollate(fields),
            local_shuffle_buffer_size=config.shuffle_buffer or None,
            local_shuffle_seed=config.seed * 1000 + epoch,
        )
        stats = train_epoch(
            model, batches, optimizer, scheduler=scheduler, scaler=scaler, grad_clip=config.grad_clip,
            ssim_weight=config.ssim_weight, amp=config.amp, max_steps=config.max_steps_per_epoch,
        )  # fmt: skip
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": stats["loss"]}
        with tempfile.TemporaryDirectory() as directory:
            report_checkpoint = None
            if rank == 0:
                val = evaluate(
                    net, reader.batches("val", config.batch_size, shuffle=False), config.ssim_weight
                )
                record = {
                    "epoch": epoch, "train_loss": stats["loss"],
                    "patches_per_s": stats["patches_per_s"] * context.get_world_size(),
                    "seconds": stats["seconds"], "lr": optimizer.param_groups[0]["lr"],
                    "val_loss": val["loss"], "val_psnr": val["psnr"], "val_ssim": val["ssim"],
                    "identity_psnr": baseline, "workers": context.get_world_size(),
                }  # fmt: skip
                best_psnr, best_epoch = record_epoch(
                    run_dir, net, optimizer, scheduler, config, record, best_psnr, best_epoch
                )
                shutil.copy2(last, Path(directory) / "last.pt")  # what a restarted worker group resumes from
                metrics = {**record, "best_psnr": best_psnr}
                report_checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=report_checkpoint)  # Ray: metrics + checkpoint, every rank
    if rank != 0:
        return None
    # Train V2 hands rank 0's return value back to the driver (Result.return_value).
    return {
        "epochs": config.epochs, "best_psnr": best_psnr, "best_epoch": best_epoch, "start_epoch": start_epoch,
        "last": str(last), "best": str(best), "metrics": record,
    }  # fmt: skip


def build_trainer(
    data_dir: Path,
    run_dir: Path,
    config: TrainConfig,
    *,
    name: str = "train",
    callbacks: Sequence[Any] = (),
) -> TorchTrainer:
    """The ``TorchTrainer`` of one run: ``config.workers`` workers, each with ``cpus_per_worker`` CPUs
    and ``gpus_per_worker`` GPUs, ``max_failures`` restarts from the last checkpoint.

    ``name`` keys Ray's run state in ``run_dir/ray/``: a rerun with the same name resumes from the
    last checkpoint there (as ``train_local`` resumes from ``last.pt``).
    """
    data_dir, run_dir = Path(data_dir).resolve(), Path(run_dir).resolve()
    if config.workers < 1:
        raise ValueError(f"train.workers: expected >= 1, got {config.workers}")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_resolved(config, run_dir)
    reader = PairReader(data_dir, val_fraction=config.val_fraction)
    train_samples = reader.count("train")
    if train_samples == 0:
        raise ValueError(f"{data_dir}: no training samples (val_fraction={config.val_fraction})")
    resources = {"CPU": float(config.cpus_per_worker)}
    if config.gpus_per_worker > 0:
        resources["GPU"] = float(config.gpus_per_worker)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": to_dict(config),
            "data_dir": str(data_dir),
            "run_dir": str(run_dir),
            "train_samples": train_samples,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.workers, use_gpu=config.gpus_per_worker > 0, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(run_dir / "ray"),
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
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
        ``{"epochs", "best_psnr", "best_epoch", "start_epoch", "last", "best", "metrics"}`` as from
        ``train_local`` (``start_epoch``: where the final worker group started, > 0 after a restart).
    """
    ensure_ray(address)
    trainer = build_trainer(Path(data_dir), Path(run_dir), config)
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"{run_dir}: distributed training failed: {result.error}") from result.error
    summary = dict(result.return_value or {})
    summary["checkpoint"] = result.checkpoint.path if result.checkpoint is not None else None
    return summary
