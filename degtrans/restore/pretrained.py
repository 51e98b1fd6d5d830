"""The bundled pretrained deep Wiener network: one non-blind model for any calibrated lens.

Deep Wiener is given the PSFs at every tile's corners, so one model serves every PSF field: it was
trained on a catalogue of random lenses and natural photographs (``benchmarks/pretrain.py``, which
reproduces the file; ``docs/training.md`` says on what, how long, and what it measured). The file is
an ordinary degtrans checkpoint with float16 weights, no optimizer, and its training provenance in
``extra["pretrained"]``. ``degtrans restore --field camera.npz`` uses it when no ``--checkpoint`` is
given, and ``train.init = "pretrained"`` starts a training run from it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from degtrans.config import TrainConfig, to_dict
from degtrans.errors import InputError, MissingInput
from degtrans.restore.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from degtrans.restore.models import build_model

PRETRAINED = Path(__file__).resolve().parents[1] / "data" / "models" / "deep-wiener.pt"


def pretrained_path() -> Path:
    """The bundled checkpoint; a clear error when the installation lacks it."""
    if not PRETRAINED.is_file():
        raise MissingInput(
            f"{PRETRAINED}: the bundled deep Wiener weights are missing from this installation "
            "(benchmarks/pretrain.py --export writes them)"
        )
    return PRETRAINED


def load_pretrained(device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The bundled deep Wiener model (float32, eval mode, on ``device``) and its ``TrainConfig``."""
    return model_from_checkpoint(pretrained_path(), expect="wiener", device=device)


def export_pretrained(
    model: nn.Module, config: TrainConfig, path: str | Path, provenance: dict[str, Any]
) -> Path:
    """Write ``model``'s weights in float16 as a checkpoint (no optimizer) with ``provenance``, atomically."""
    half = copy.deepcopy(model).cpu().half()
    return save_checkpoint(path, half, None, None, 0, config, {"pretrained": provenance})


def init_weights(model: nn.Module, init: str) -> None:
    """Load ``init`` (``"pretrained"``: the bundled weights, else a checkpoint path) into ``model``.

    Raises:
        FileNotFoundError naming ``train.init`` and the file when it is missing.
        ValueError naming the file when its network has other sizes than ``model`` (a run starting
        from it must use the same ``width``, ``wiener.features``, ``wiener.stages`` ...).
    """
    try:
        path = pretrained_path() if init == "pretrained" else Path(init)
        state = load_checkpoint(path)
    except FileNotFoundError as error:
        raise MissingInput(f"train.init={init!r}: {error}") from error
    weights = state["extra"].get("ema") or state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        trained = state["train_config"]
        sizes = {"width": trained.width, "wiener": to_dict(trained.wiener)}
        raise InputError(f"train.init={init!r} ({path}): its network does not fit this run's ({sizes}): "
                         f"{str(error).splitlines()[0]}") from error  # fmt: skip


def check_init(config: TrainConfig) -> None:
    """Fail now when ``config.init``'s weights are missing or do not fit ``config``'s network.

    For a driver that starts workers (Ray Train): each worker's own ``init_weights`` would fail only
    after the cluster started, once per restart, behind Ray's error. Raises as ``init_weights``.
    """
    if config.init:
        init_weights(build_model(config), config.init)
