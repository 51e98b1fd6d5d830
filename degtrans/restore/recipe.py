"""The training recipe around the optimizer: learning-rate schedule (warmup, cosine or step), weight EMA."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from degtrans.config import TrainConfig


def lr_factor(step: int, config: TrainConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the base learning rate before optimizer step ``step`` (0-based).

    Linear warmup over ``config.optim.warmup_steps``; then ``"cosine"``: half a cosine from 1 to 0.01 over
    the remaining steps, or ``"step"``: ``lr_step_gamma`` per ``lr_step_epochs`` epochs.
    """
    warmup = config.optim.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if config.optim.lr_schedule == "step":
        epoch = step // max(1, steps_per_epoch)
        return config.optim.lr_step_gamma ** (epoch // max(1, config.optim.lr_step_epochs))
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step scheduler of :func:`lr_factor` over ``config.epochs`` epochs of ``steps_per_epoch`` steps."""
    total = steps_per_epoch * config.epochs
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config, steps_per_epoch, total)
    )


class WeightEMA:
    """Exponential moving average of a model's parameters: ``avg += (1 - decay) (w - avg)``; buffers copied.

    Args:
        model: the trained model (not modified).
        decay: in [0, 1); the average's horizon is about ``1 / (1 - decay)`` steps.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"WeightEMA: decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average toward ``model``'s current weights."""
        for average, current in zip(self.module.parameters(), model.parameters(), strict=True):
            average.lerp_(current.detach(), 1.0 - self.decay)
        for average, current in zip(self.module.buffers(), model.buffers(), strict=True):
            average.copy_(current)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
