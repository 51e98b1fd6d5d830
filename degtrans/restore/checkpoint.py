"""The checkpoint format: one ``torch.save`` file per state, written atomically.

Layout (a dict): ``format`` (``"degtrans-checkpoint"``), ``version``, ``model_name``, ``model`` (state
dict on CPU), ``optimizer`` and ``scheduler`` (state dicts or ``None``), ``epoch`` (the last completed
one), ``config`` (the ``[train]`` section as a plain dict), ``torch_rng`` and ``extra`` (the loop's
bookkeeping, e.g. ``best_psnr``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from degtrans import __version__
from degtrans.atomic import atomic_path
from degtrans.config import TrainConfig, replace_checked, to_dict
from degtrans.errors import InputError, MissingInput
from degtrans.restore.models import build_model, model_name

FORMAT = "degtrans-checkpoint"


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
    state = {
        "format": FORMAT,
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
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


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
        raise MissingInput(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises many types for corrupt files
        raise InputError(f"{path}: cannot read checkpoint: {error}") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path}: not a degtrans checkpoint")
    state["train_config"] = replace_checked(
        TrainConfig(), state["config"], f"{path}: checkpoint train", stored=True
    )
    if model is not None:
        expected = model_name(model)
        if expected is not None and expected != state["model_name"]:
            raise InputError(f"{path}: checkpoint is for model {state['model_name']!r}, not {expected!r}")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise InputError(f"{path}: checkpoint does not fit the model: {error}") from error
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
        raise InputError(f"{path}: checkpoint is for model {config.model!r}, expected {expect!r}")
    model = build_model(config)
    state = load_checkpoint(path, model)
    if state["extra"].get("ema") is not None:
        model.load_state_dict(state["extra"]["ema"])  # the averaged weights are the ones validated
    return model.to(device).eval(), config
