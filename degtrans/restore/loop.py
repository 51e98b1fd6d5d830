"""The training loop as plain functions, shared by ``degtrans train --local`` and the Ray Train path.

``build_model`` -> ``make_optimizer`` / ``make_scheduler`` -> ``train_epoch`` / ``evaluate`` per epoch
-> ``save_checkpoint``. ``train_local`` strings them together in-process; ``degtrans.cluster.train``
calls the same functions inside a Ray Train worker.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from degtrans import __version__
from degtrans.config import TrainConfig, coerce, to_dict, write_resolved
from degtrans.figures import pyplot, save_figure
from degtrans.metrics import psnr, ssim
from degtrans.restore.data import PairReader
from degtrans.restore.losses import restoration_loss
from degtrans.restore.models.fovkpn import FOVKPN
from degtrans.restore.models.wiener import DeepWiener
from degtrans.restore.recipe import WeightEMA
from degtrans.restore.recipe import make_scheduler as make_recipe_scheduler

log = logging.getLogger(__name__)

MODELS: dict[str, Callable[[TrainConfig], nn.Module]] = {
    "fovkpn": lambda c: FOVKPN(
        width=c.width,
        offset_channels=c.offset_channels,
        kernel_size=c.kpn_kernel,
        deform_blocks=c.deform_blocks,
        offset_groups=c.offset_groups,
        dilations=c.kpn_dilations,
        kernel_scale=c.kpn_kernel_scale,
        decoder_deform=c.decoder_deform,
    ),
    "wiener": lambda c: DeepWiener(features=c.wiener_features, width=c.width, bands=c.wiener_bands),
}
MODEL_CLASSES: dict[str, type] = {"fovkpn": FOVKPN, "wiener": DeepWiener}


def build_model(config: TrainConfig) -> nn.Module:
    """The network ``config.model`` names, with the sizes of ``config``, seeded by ``config.seed``."""
    if config.model not in MODELS:
        raise ValueError(f"train.model: expected one of {sorted(MODELS)}, got {config.model!r}")
    torch.manual_seed(config.seed)
    return MODELS[config.model](config)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the config's learning rate and weight decay."""
    return torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay over ``total_steps`` optimizer steps to 1 % of the initial learning rate."""
    base = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, total_steps), eta_min=0.01 * base
    )


def _forward(model: nn.Module, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    def get(name: str) -> torch.Tensor | None:
        return batch[name].to(device, non_blocking=True) if name in batch else None

    psf = None
    if getattr(model, "needs_psf", False):
        # The PSFs at the patch corners describe the field across the patch; the centre's is the fallback.
        psf = get("psf_corners") if "psf_corners" in batch else get("psf")
    return model(get("degraded"), get("coords"), psf, noise=get("noise"), isp=get("isp"))


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_epoch(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    report: Callable[[dict[str, float]], None] | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float = 1.0,
    ssim_weight: float = 0.0,
    loss_kind: str = "l1",
    amp: bool = True,
    max_steps: int = 0,
    progress: bool | str = False,
    ema: WeightEMA | None = None,
) -> dict[str, float]:
    """One pass over ``batches``: L1 or L2 (+ SSIM) loss, clipped gradients, a scheduler step per batch.

    Mixed precision (float16 autocast with ``scaler``, or bfloat16 without one) is used on CUDA when
    ``amp``; CPU runs in float32.

    Args:
        batches: dicts with ``degraded``, ``clean``, ``coords`` (and ``psf`` for non-blind models).
        report: called after every step with ``{"step", "loss", "lr"}``.
        max_steps: stop after this many batches (0: all).
        progress: show a tqdm bar (a string is its description).
        ema: a weight average updated after every optimizer step.

    Returns:
        ``{"loss": mean loss, "patches": n, "seconds": s, "patches_per_s": n / s, "steps": steps}``.
    """
    model.train()
    device = _device_of(model)
    use_amp = amp and device.type == "cuda"
    amp_dtype = torch.float16 if scaler is not None else torch.bfloat16
    total, patches, steps = 0.0, 0, 0
    start = time.perf_counter()
    bar = tqdm(desc=progress if isinstance(progress, str) else "train", unit="batch", disable=not progress)
    for batch in batches:
        clean = batch["clean"].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
            restored = _forward(model, batch, device)
            loss = restoration_loss(restored, clean, ssim_weight, loss_kind)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        value = float(loss.detach())
        total += value * clean.shape[0]
        patches += clean.shape[0]
        steps += 1
        elapsed = time.perf_counter() - start
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}", patches_s=f"{patches / max(elapsed, 1e-9):.1f}")
        if report is not None:
            report({"step": steps, "loss": value, "lr": optimizer.param_groups[0]["lr"]})
        if max_steps and steps >= max_steps:
            break
    bar.close()
    seconds = time.perf_counter() - start
    return {
        "loss": total / max(patches, 1),
        "patches": patches,
        "steps": steps,
        "seconds": seconds,
        "patches_per_s": patches / max(seconds, 1e-9),
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[dict[str, Any]], ssim_weight: float = 0.0, loss_kind: str = "l1"
) -> dict[str, float]:
    """Mean ``psnr`` (dB), ``ssim`` and ``loss`` of ``model`` over ``batches`` (outputs clipped to [0, 1])."""
    model.eval()
    device = _device_of(model)
    sums = {"psnr": 0.0, "ssim": 0.0, "loss": 0.0}
    count = 0
    for batch in batches:
        clean = batch["clean"].to(device)
        restored = _forward(model, batch, device).float().clamp(0.0, 1.0)
        n = clean.shape[0]
        sums["psnr"] += float(psnr(restored, clean).sum())
        sums["ssim"] += float(ssim(restored, clean).sum())
        sums["loss"] += float(restoration_loss(restored, clean, ssim_weight, loss_kind)) * n
        count += n
    if count == 0:
        return {"psnr": math.nan, "ssim": math.nan, "loss": math.nan, "count": 0}
    return {**{k: v / count for k, v in sums.items()}, "count": count}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    epoch: int,
    config: TrainConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write model, optimizer, schedule, epoch (completed), RNG state and resolved config, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": "degtrans-checkpoint",
        "version": __version__,
        "model_name": config.model,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "config": to_dict(config),
        "torch_rng": torch.get_rng_state(),
        "extra": extra or {},
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def config_from_dict(values: dict[str, Any], where: str) -> TrainConfig:
    """A ``TrainConfig`` from a checkpoint's stored dict (unknown keys are an error naming ``where``)."""
    types = typing.get_type_hints(TrainConfig)
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ValueError(f"{where}: checkpoint config has unknown key(s) {unknown}")
    return TrainConfig(**{k: coerce(v, types[k], f"{where}: train.{k}") for k, v in values.items()})


def load_checkpoint(
    path: str | Path,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    map_location: str | torch.device = "cpu",
    restore_rng: bool = False,
) -> dict[str, Any]:
    """Read a checkpoint; load its states into the given objects.

    Returns:
        The checkpoint dict, with ``"train_config"`` (a ``TrainConfig``) added.

    Raises:
        ValueError naming the file when it is unreadable, not a degtrans checkpoint, or for another model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises many types for corrupt files
        raise ValueError(f"{path}: cannot read checkpoint: {error}") from error
    if not isinstance(state, dict) or state.get("format") != "degtrans-checkpoint":
        raise ValueError(f"{path}: not a degtrans checkpoint")
    state["train_config"] = config_from_dict(state["config"], str(path))
    if model is not None:
        expected = next((name for name, cls in MODEL_CLASSES.items() if isinstance(model, cls)), None)
        if expected is not None and expected != state["model_name"]:
            raise ValueError(f"{path}: checkpoint is for model {state['model_name']!r}, not {expected!r}")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise ValueError(f"{path}: checkpoint does not fit the model: {error}") from error
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        torch.set_rng_state(state["torch_rng"])
    return state


def model_from_checkpoint(
    path: str | Path, expect: str | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, TrainConfig]:
    """Build the checkpoint's model with its stored sizes and weights, in eval mode on ``device``.

    ``expect``: the model the caller needs (``"fovkpn"``/``"wiener"``); another is an error naming the file.
    """
    state = load_checkpoint(path)
    config = state["train_config"]
    if expect is not None and config.model != expect:
        raise ValueError(f"{path}: checkpoint is for model {config.model!r}, expected {expect!r}")
    model = build_model(config)
    state = load_checkpoint(path, model)
    if state["extra"].get("ema") is not None:
        model.load_state_dict(state["extra"]["ema"])  # the weights that were validated
    return model.to(device).eval(), config


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
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


def record_epoch(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    config: TrainConfig,
    record: dict[str, Any],
    best_psnr: float,
    best_epoch: int,
    ema: WeightEMA | None = None,
) -> tuple[float, int]:
    """End of an epoch in ``run_dir``: ``best.pt`` when ``record["val_psnr"]`` improves, ``last.pt``,
    a ``metrics.jsonl`` line and ``curves.png``. Returns the updated ``(best_psnr, best_epoch)``.
    With ``ema`` the checkpoints also hold the averaged weights (``extra["ema"]``)."""
    epoch = record["epoch"]
    averaged = {"ema": ema.state_dict()} if ema is not None else {}
    if record["val_psnr"] > best_psnr or best_epoch < 0:
        best_psnr, best_epoch = record["val_psnr"], epoch
        best_extra = {"best_psnr": best_psnr, **averaged}
        save_checkpoint(run_dir / "best.pt", model, optimizer, scheduler, epoch, config, best_extra)
    extra = {"best_psnr": best_psnr, "best_epoch": best_epoch, **averaged}
    save_checkpoint(run_dir / "last.pt", model, optimizer, scheduler, epoch, config, extra)
    _append_jsonl(run_dir / "metrics.jsonl", record)
    draw_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    return best_psnr, best_epoch


def _identity_psnr(reader: PairReader, config: TrainConfig) -> float:
    total, count = 0.0, 0
    for batch in reader.batches("val", config.batch_size, shuffle=False):
        total += float(psnr(batch["degraded"], batch["clean"]).sum())
        count += batch["clean"].shape[0]
    return total / max(count, 1)


def train_local(
    data_dir: str | Path,
    run_dir: str | Path,
    config: TrainConfig,
    resume: bool = True,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``config.model`` on ``data_dir`` in this process.

    ``run_dir`` gets ``last.pt`` (every epoch), ``best.pt`` (best validation PSNR), ``metrics.jsonl``
    (one line per epoch), ``config.json`` and ``curves.png``. With ``resume`` and an existing
    ``last.pt``, training continues from it exactly (model, optimizer, schedule, epoch, RNG).

    Returns:
        ``{"epochs", "best_psnr", "best_epoch", "last", "best", "metrics"}`` (the last epoch's record).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model_cls = MODEL_CLASSES.get(config.model)
    reader = PairReader(
        data_dir, val_fraction=config.val_fraction, with_psf=bool(model_cls and model_cls.needs_psf)
    )
    n_train = reader.count("train")
    if n_train == 0:
        raise ValueError(f"{data_dir}: no training samples (val_fraction={config.val_fraction})")
    steps = math.ceil(n_train / config.batch_size)
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    model = build_model(config).to(device)
    optimizer = make_optimizer(model, config)
    scheduler = make_recipe_scheduler(optimizer, config, steps)
    ema = WeightEMA(model, config.ema_decay) if config.ema_decay > 0 else None
    scaler = torch.amp.GradScaler("cuda") if (device.type == "cuda" and config.amp) else None
    last, best, metrics_path = run_dir / "last.pt", run_dir / "best.pt", run_dir / "metrics.jsonl"
    start_epoch, best_psnr, best_epoch = 0, -math.inf, -1
    if resume and last.exists():
        state = load_checkpoint(last, model, optimizer, scheduler, map_location=device, restore_rng=True)
        start_epoch = state["epoch"] + 1
        best_psnr = state["extra"].get("best_psnr", -math.inf)
        if ema is not None and state["extra"].get("ema") is not None:
            ema.load_state_dict(state["extra"]["ema"])
        best_epoch = state["extra"].get("best_epoch", -1)
        log.info("resuming %s from epoch %d", last, start_epoch)
    elif metrics_path.exists():
        metrics_path.unlink()
    write_resolved(config, run_dir)
    baseline = _identity_psnr(reader, config)
    record: dict[str, Any] = {}
    for epoch in range(start_epoch, config.epochs):
        batches = reader.batches(
            "train", config.batch_size, seed=config.seed, epoch=epoch, shuffle_buffer=config.shuffle_buffer
        )
        stats = train_epoch(
            model, batches, optimizer, scheduler=scheduler, scaler=scaler, grad_clip=config.grad_clip,
            ssim_weight=config.ssim_weight, loss_kind=config.loss, amp=config.amp,
            max_steps=config.max_steps_per_epoch,
            progress=f"epoch {epoch + 1}/{config.epochs}" if progress else False, ema=ema,
        )  # fmt: skip
        val_batches = reader.batches("val", config.batch_size, shuffle=False)
        val = evaluate(ema.module if ema else model, val_batches, config.ssim_weight, config.loss)
        record = {
            "epoch": epoch, "train_loss": stats["loss"], "patches_per_s": stats["patches_per_s"],
            "seconds": stats["seconds"], "lr": optimizer.param_groups[0]["lr"], "val_loss": val["loss"],
            "val_psnr": val["psnr"], "val_ssim": val["ssim"], "identity_psnr": baseline,
        }  # fmt: skip
        best_psnr, best_epoch = record_epoch(
            run_dir, model, optimizer, scheduler, config, record, best_psnr, best_epoch, ema
        )
        if progress:
            print(
                f"epoch {epoch + 1}/{config.epochs}: loss {stats['loss']:.4f}  val PSNR {val['psnr']:.2f} dB "
                f"(input {baseline:.2f})  SSIM {val['ssim']:.4f}  {stats['patches_per_s']:.1f} patches/s"
            )
    return {
        "epochs": config.epochs, "best_psnr": best_psnr, "best_epoch": best_epoch,
        "last": str(last), "best": str(best), "metrics": record,
    }  # fmt: skip
