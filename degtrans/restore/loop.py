"""The training loop, once: ``fit`` trains every network of the package for a ``Budget``.

``fit`` steps an optimizer over batches (one mixed-precision policy, ``precision``) until its budget
of epochs, steps or seconds is spent, calling back at the end of each epoch and wherever the caller
asks. Its callers: ``train_run`` (per epoch: ``evaluate``, checkpoints and ``metrics.jsonl`` in a run
directory) for ``degtrans train`` locally (``train_local``) and in every Ray Train worker
(``degtrans.cluster.train`` gives it its Ray Data shard, the DDP wrapper, the checkpoint to resume
from and a ``report`` callback, and nothing else); the benchmarks' fixed-step runs
(``restore.bench.train_for``) and the pretraining of the bundled weights (``restore.pretrain``).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from degtrans.atomic import write_atomic
from degtrans.config import OptimConfig, TrainConfig, small_on_cpu, write_resolved
from degtrans.errors import InputError
from degtrans.figures import pyplot, save_figure
from degtrans.metrics import psnr, ssim
from degtrans.restore.checkpoint import load_checkpoint, save_checkpoint
from degtrans.restore.data import PairReader
from degtrans.restore.losses import restoration_loss
from degtrans.restore.models import build_model, model_spec
from degtrans.restore.pretrained import init_weights
from degtrans.restore.recipe import WeightEMA, make_scheduler

log = logging.getLogger(__name__)

Batches = Iterable[dict[str, Any]]
# Called at the end of every epoch on every worker: the epoch's metrics, and on the main worker the
# checkpoint just written (``RUN/last.pt``); ``None`` elsewhere.
EpochReport = Callable[[dict[str, Any], Path | None], None]


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW with ``optim``'s learning rate and weight decay (one fused kernel when on CUDA)."""
    params = list(model.parameters())
    fused = bool(params) and all(p.is_cuda for p in params)
    return torch.optim.AdamW(params, lr=optim.learning_rate, weight_decay=optim.weight_decay, fused=fused)


def forward_batch(model: nn.Module, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """``model(degraded, coords, psf, noise=, isp=)``; batches carry ``psf`` (and ``psf_corners``) for
    models whose registry entry needs it, ``noise`` and ``isp`` when the dataset stores them."""

    def get(name: str) -> torch.Tensor | None:
        return batch[name].to(device, non_blocking=True) if name in batch else None

    # The PSFs at the patch corners describe the field across the patch; the centre's is the fallback.
    psf = get("psf_corners") if "psf_corners" in batch else get("psf")
    return model(get("degraded"), get("coords"), psf, get("noise"), get("isp"))


def precision(device: torch.device, amp: bool) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """The one mixed-precision policy: ``(autocast dtype, scaler)``.

    On CUDA with ``amp``: bfloat16 autocast where the GPU has it (its range needs no loss scaling),
    else float16 with a ``GradScaler``. Elsewhere (the CPU, or ``amp`` off): float32, ``(None, None)``.
    """
    if not amp or device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


@dataclass(frozen=True)
class Budget:
    """How long :func:`fit` trains: until the first limit it sets is reached (0: no limit).

    ``epochs`` and ``steps`` count from the start of the run (a resumed run included); ``seconds`` is
    the wall time of this call (callbacks included), checked after every step.
    """

    epochs: int = 0
    steps: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Progress:
    """Where a run stands: epochs finished, optimizer steps taken, seconds trained (all calls)."""

    epoch: int = 0
    step: int = 0
    seconds: float = 0.0


# Called by ``fit`` at the end of every epoch and at every stop ``every`` asks for: where the run
# stands and the chunk's statistics (``fit``'s ``train_steps``). A ``Budget`` returned replaces the run's.
ChunkEnd = Callable[[Progress, dict[str, float]], Budget | None]


def _spent(budget: Budget, done: Progress, elapsed: float) -> bool:
    return bool(
        (budget.epochs and done.epoch >= budget.epochs)
        or (budget.steps and done.step >= budget.steps)
        or (budget.seconds and elapsed >= budget.seconds)
    )


def fit(
    model: nn.Module,
    batches: Callable[[int], Batches],
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    budget: Budget,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ema: WeightEMA | None = None,
    start: Progress = Progress(),
    every: Callable[[int], int] | None = None,
    on_chunk: ChunkEnd | None = None,
    report: Callable[[dict[str, float]], None] | None = None,
    progress: bool = False,
) -> Progress:
    """The training loop, once: L1 or L2 (+ SSIM) loss, clipped gradients, a scheduler step and a
    weight-average update per batch, in :func:`precision`'s mixed precision, until ``budget`` is spent.

    Args:
        model: the network on its device (or its DDP wrapper).
        batches: ``epoch -> batches`` (dicts with ``degraded``, ``clean``, ``coords``, and ``psf`` for
            the non-blind models), at most ``config.max_steps_per_epoch`` of them used per epoch (0: all);
            a stream that never ends is one endless epoch.
        config: ``optim``'s ``grad_clip``, ``loss`` and ``ssim_weight``; ``amp`` and ``max_steps_per_epoch``.
        start: the run's position when resuming (optimizer, schedule and batches already there).
        every: ``step -> the next step (> step) at which on_chunk is called``, besides every epoch end.
        on_chunk: see ``ChunkEnd``; it may checkpoint, score, log or raise to stop.
        report: called after every step with ``{"step" (of the chunk), "loss", "lr"}``.
        progress: a tqdm bar per chunk.

    Returns:
        The run's ``Progress`` when the budget is spent.
    """
    device = next(model.parameters()).device
    amp_dtype, scaler = precision(device, config.amp)  # one scaler for the run: its scale carries over
    scaler = scaler or torch.amp.GradScaler("cuda", enabled=False)  # disabled: the plain float32 steps

    def train_steps(chunk: Batches, seconds: float, title: str | None) -> dict[str, float]:
        """One optimizer step per batch of ``chunk`` until it ends or ``seconds`` have passed (a bar
        titled ``title`` unless ``None``)."""
        model.train()
        patches, steps, timed_out = 0, 0, False
        total = torch.zeros((), dtype=torch.float64, device=device)
        # Reading the loss waits for the device: only when a bar or a report shows it each step.
        per_step = title is not None or report is not None
        chunk_start = time.perf_counter()
        bar = tqdm(desc=title, unit="batch", disable=title is None)
        for batch in chunk:
            clean = batch["clean"].to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                restored = forward_batch(model, batch, device)
                loss = restoration_loss(restored, clean, config.optim.ssim_weight, config.optim.loss)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if config.optim.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            if ema is not None:
                ema.update(model)
            total += loss.detach().double() * clean.shape[0]
            patches += clean.shape[0]
            steps += 1
            if per_step:
                value = float(loss.detach())
                elapsed = time.perf_counter() - chunk_start
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", patches_s=f"{patches / max(elapsed, 1e-9):.1f}")
                if report is not None:
                    report({"step": steps, "loss": value, "lr": optimizer.param_groups[0]["lr"]})
            if time.perf_counter() - chunk_start >= seconds:
                timed_out = True
                break
        bar.close()
        mean_loss = float(total) / max(patches, 1)  # waits for the last step
        elapsed = time.perf_counter() - chunk_start
        return {
            "loss": mean_loss,
            "patches": patches,
            "steps": steps,
            "seconds": elapsed,
            "patches_per_s": patches / max(elapsed, 1e-9),
            "timed_out": timed_out,
        }

    began = time.perf_counter()
    done = start
    while not _spent(budget, done, time.perf_counter() - began):
        epoch_batches = iter(batches(done.epoch))
        left = config.max_steps_per_epoch or None  # steps left in this epoch (None: until it ends)
        while True:
            limits = [left] if left is not None else []
            limits += [budget.steps - done.step] if budget.steps else []
            limits += [every(done.step) - done.step] if every is not None else []
            chunk = min(limits) if limits else None
            seconds = budget.seconds - (time.perf_counter() - began) if budget.seconds else math.inf
            title = f"epoch {done.epoch + 1}" + (f"/{budget.epochs}" if budget.epochs else "")
            stats = train_steps(itertools.islice(epoch_batches, chunk), seconds, title if progress else None)
            if left is not None:
                left -= stats["steps"]
            ended = left == 0 or (not stats["timed_out"] and (chunk is None or stats["steps"] < chunk))
            done = Progress(done.epoch + ended, done.step + stats["steps"], done.seconds + stats["seconds"])
            if on_chunk is not None and (stats["steps"] or ended):
                budget = on_chunk(done, stats) or budget
            if ended or _spent(budget, done, time.perf_counter() - began):
                break
    return done


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[dict[str, Any]], ssim_weight: float = 0.0, loss_kind: str = "l1"
) -> dict[str, float]:
    """Mean ``psnr`` (dB), ``ssim`` and ``loss`` of ``model`` over ``batches`` (outputs clipped to [0, 1])."""
    model.eval()
    device = next(model.parameters()).device
    sums = {"psnr": 0.0, "ssim": 0.0, "loss": 0.0}
    count = 0
    for batch in batches:
        clean = batch["clean"].to(device)
        restored = forward_batch(model, batch, device).float().clamp(0.0, 1.0)
        n = clean.shape[0]
        sums["psnr"] += float(psnr(restored, clean).sum())
        sums["ssim"] += float(ssim(restored, clean).sum())
        sums["loss"] += float(restoration_loss(restored, clean, ssim_weight, loss_kind)) * n
        count += n
    if count == 0:
        return {"psnr": math.nan, "ssim": math.nan, "loss": math.nan, "count": 0}
    return {**{k: v / count for k, v in sums.items()}, "count": count}


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One JSON line appended to ``path``, on disk before returning (a killed run keeps it)."""
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def draw_curves(metrics_path: str | Path, png: str | Path) -> Path:
    """Training loss and validation PSNR per epoch from ``metrics.jsonl``, as a PNG (written atomically)."""
    plt = pyplot()
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [r["train_loss"] for r in records], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in records], "s--", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    ax_psnr.plot(epochs, [r["val_psnr"] for r in records], "o-", color="tab:green", label="model")
    if records and "identity_psnr" in records[0]:
        ax_psnr.axhline(records[0]["identity_psnr"], color="gray", ls=":", label="degraded input")
    ax_psnr.set(xlabel="epoch", ylabel="PSNR (dB)", title="validation PSNR")
    ax_psnr.legend()
    fig.tight_layout()
    return save_figure(fig, png, dpi=100)


def _keep_records_before(path: Path, epoch: int) -> None:
    """Keep the ``metrics.jsonl`` records of epochs ``< epoch``: a resumed run re-runs the later ones."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip()]
    keep = [line for line in keep if json.loads(line)["epoch"] < epoch]
    if keep:
        write_atomic(path, "".join(line + "\n" for line in keep))
    else:
        path.unlink()


def train_run(
    config: TrainConfig,
    run_dir: str | Path,
    train_batches: Callable[[int], Batches],
    train_samples: int,
    val_reader: PairReader | None,
    *,
    wrap: Callable[[nn.Module], nn.Module] = lambda net: net,
    world_size: int = 1,
    resume_from: Path | None = None,
    report: EpochReport | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``config.model`` for ``config.epochs`` epochs (:func:`fit`) with every ``[train]`` field
    of ``config``, validating and checkpointing in ``run_dir`` after each: ``train_local``'s run and
    every Ray Train worker's.

    Args:
        train_batches: ``epoch -> batches`` of this worker's part of the training split (dicts with
            ``degraded``, ``clean``, ``coords``, and ``psf`` when the model's registry entry needs it).
        train_samples: samples in the whole training split (sizes the learning-rate schedule).
        val_reader: the dataset's reader on the main worker, which evaluates the validation split and
            writes ``run_dir``; ``None`` on the others (Ray ranks > 0).
        wrap: puts the network on its device (and, in Ray, wraps it for DDP); the unwrapped network is
            the one evaluated and checkpointed.
        world_size: workers training together (each does ``1 / world_size`` of the split per epoch).
        resume_from: a checkpoint to continue from exactly (model, optimizer, schedule, epoch, RNG).
        report: called after every epoch (see ``EpochReport``).
        progress: show a tqdm bar per epoch.

    Returns:
        ``{"epochs", "best_psnr", "best_epoch", "start_epoch", "last", "best", "metrics"}`` (the last
        epoch's record); on workers without ``val_reader`` only ``metrics`` has the training loss.
    """
    run_dir = Path(run_dir)
    main = val_reader is not None
    net = build_model(config)
    if config.init and resume_from is None:
        init_weights(net, config.init)
    model = wrap(net)
    device = next(model.parameters()).device
    steps = max(1, math.ceil(train_samples / (config.batch_size * world_size)))
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    optimizer = make_optimizer(model, config.optim)
    scheduler = make_scheduler(optimizer, config, steps)
    ema = WeightEMA(net, config.optim.ema_decay) if config.optim.ema_decay > 0 else None
    start_epoch, best_psnr, best_epoch = 0, -math.inf, -1
    if resume_from is not None:
        state = load_checkpoint(resume_from, net, optimizer, scheduler, map_location=device, restore_rng=True)
        start_epoch = state["epoch"] + 1
        best_psnr = state["extra"].get("best_psnr", -math.inf)
        best_epoch = state["extra"].get("best_epoch", -1)
        if ema is not None and state["extra"].get("ema") is not None:
            ema.load_state_dict(state["extra"]["ema"])
        log.info("resuming %s from epoch %d", resume_from, start_epoch)
    baseline = math.nan
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_resolved(config, run_dir)
        _keep_records_before(run_dir / "metrics.jsonl", start_epoch)
        total, count = 0.0, 0  # the degraded inputs' mean PSNR: the 'do nothing' baseline
        for batch in val_reader.batches("val", config.batch_size, shuffle=False):
            total += float(psnr(batch["degraded"], batch["clean"]).sum())
            count += batch["clean"].shape[0]
        baseline = total / max(count, 1)
        if val_reader.count("val") == 0:
            log.warning(
                "%s: no validation split (val_fraction=%s, %s): best.pt will be the last epoch's weights",
                val_reader.data_dir, config.val_fraction,
                "a single source image" if config.val_fraction > 0 else "none asked for",
            )  # fmt: skip
    record: dict[str, Any] = {}

    def end_epoch(done: Progress, stats: dict[str, float]) -> None:
        nonlocal record, best_psnr, best_epoch
        epoch = done.epoch - 1
        record = {"epoch": epoch, "train_loss": stats["loss"]}
        checkpoint = None
        if main:
            val_batches = val_reader.batches("val", config.batch_size, shuffle=False)
            val = evaluate(
                ema.module if ema else net, val_batches, config.optim.ssim_weight, config.optim.loss
            )
            record = {
                "epoch": epoch, "train_loss": stats["loss"],
                "patches_per_s": stats["patches_per_s"] * world_size, "seconds": stats["seconds"],
                "lr": optimizer.param_groups[0]["lr"], "val_loss": val["loss"], "val_psnr": val["psnr"],
                "val_ssim": val["ssim"], "val_count": val["count"], "identity_psnr": baseline,
                "workers": world_size,
            }  # fmt: skip
            # best.pt when val_psnr improves; without a validation split every epoch's (the last).
            averaged = {"ema": ema.state_dict()} if ema is not None else {}

            def save(name: str, extra: dict[str, Any]) -> Path:
                path = run_dir / name
                return save_checkpoint(path, net, optimizer, scheduler, epoch, config, extra | averaged)

            if val["psnr"] > best_psnr or best_epoch < 0 or val["count"] == 0:
                best_psnr, best_epoch = val["psnr"], epoch
                save("best.pt", {"best_psnr": best_psnr})
            checkpoint = save("last.pt", {"best_psnr": best_psnr, "best_epoch": best_epoch})
            append_jsonl(run_dir / "metrics.jsonl", record)
            draw_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        if report is not None:
            report({**record, "best_psnr": best_psnr} if main else record, checkpoint)

    fit(model, train_batches, optimizer, config, Budget(epochs=config.epochs), scheduler=scheduler, ema=ema,
        start=Progress(epoch=start_epoch), on_chunk=end_epoch, progress=progress)  # fmt: skip
    return {
        "epochs": config.epochs, "best_psnr": best_psnr, "best_epoch": best_epoch, "start_epoch": start_epoch,
        "last": str(run_dir / "last.pt"), "best": str(run_dir / "best.pt"), "metrics": record,
    }  # fmt: skip


def train_reader(data_dir: str | Path, config: TrainConfig) -> PairReader:
    """``data_dir``'s reader for ``config`` (patch PSFs when its model needs them); an ``InputError``
    when ``config.val_fraction`` leaves it no training samples."""
    with_psf = model_spec(config.model).needs_psf
    reader = PairReader(data_dir, val_fraction=config.val_fraction, with_psf=with_psf)
    if reader.count("train") == 0:
        raise InputError(f"{data_dir}: no training samples (val_fraction={config.val_fraction})")
    return reader


def train_local(
    data_dir: str | Path,
    run_dir: str | Path,
    config: TrainConfig,
    resume: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``config.model`` on ``data_dir`` in this process (``train_run`` over a ``PairReader``).

    ``run_dir`` gets ``last.pt`` (every epoch), ``best.pt`` (best validation PSNR), ``metrics.jsonl``
    (one line per epoch), ``config.json`` and ``curves.png``. With ``resume`` and an existing
    ``last.pt``, training continues from it exactly (model, optimizer, schedule, epoch, RNG). Returns
    ``train_run``'s summary.
    """
    last = Path(run_dir) / "last.pt"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reader = train_reader(data_dir, config)

    def train_batches(epoch: int) -> Batches:
        return reader.batches(
            "train", config.batch_size, seed=config.seed, epoch=epoch, shuffle_buffer=config.shuffle_buffer
        )

    def print_epoch(record: dict[str, Any], _checkpoint: Path | None) -> None:
        val = (
            f"val PSNR {record['val_psnr']:.2f} dB (input {record['identity_psnr']:.2f})  SSIM "
            f"{record['val_ssim']:.4f}"
            if record.get("val_count", 1) > 0
            else "no validation split"
        )
        print(
            f"epoch {record['epoch'] + 1}/{config.epochs}: loss {record['train_loss']:.4f}  {val}  "
            f"{record['patches_per_s']:.1f} patches/s"
        )

    return train_run(
        config, run_dir, train_batches, reader.count("train"), reader, wrap=lambda net: net.to(device),
        resume_from=last if resume and last.exists() else None, report=print_epoch if progress else None,
        progress=progress,
    )  # fmt: skip


def train(
    data_dir: str | Path,
    run_dir: str | Path,
    config: TrainConfig,
    given: set[str],
    *,
    resume: bool = True,
    distributed: Callable[[Path, Path, TrainConfig], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``degtrans train``: ``train_local``, or ``distributed`` (Ray Train's, which restore may not
    import) when given; on a CPU with the small network's sizes (``config.CPU_SIZES``) where ``given``
    (the keys the config file and overrides set, ``config.given_keys``) leaves them open.

    Returns:
        The run's summary (see ``train_local``), after printing its best validation PSNR.
    """
    on_gpu = torch.cuda.is_available() if distributed is None else config.ray.gpus_per_worker > 0
    if not on_gpu:
        config, changed = small_on_cpu(config, given)
        if changed:
            sizes = ", ".join(f"{k}={v}" for k, v in changed.items())
            print(f"training on the CPU: the small network ({sizes}); --set train.KEY=VALUE for others")
    if distributed is None:
        result = train_local(data_dir, run_dir, config, resume=resume)
    else:
        result = distributed(Path(data_dir), Path(run_dir), config)
    if result["metrics"].get("val_count", 1) == 0:
        print(f"no validation split: best.pt is the last epoch's; checkpoints in {run_dir}")
    else:
        print(f"best validation PSNR {result['best_psnr']:.2f} dB (epoch {result['best_epoch'] + 1}); "
              f"checkpoints in {run_dir}")  # fmt: skip
    return result
