"""The restoration networks, registered once: ``MODELS[config.model]`` builds one from a ``TrainConfig``.

Each entry says what the network needs besides the degraded patch (``needs_psf``), read by whoever
makes its batches: the local reader and the Ray collate attach the patch PSF only for such models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from degtrans.config import TrainConfig
from degtrans.errors import InputError
from degtrans.restore.models.fovkpn import FOVKPN
from degtrans.restore.models.wiener import DeepWiener


@dataclass(frozen=True)
class ModelSpec:
    """A registered network: its class and how a ``TrainConfig`` sizes it."""

    cls: type[nn.Module]
    build: Callable[[TrainConfig], nn.Module]

    @property
    def needs_psf(self) -> bool:
        """Whether the network takes the PSF at each patch (non-blind), so batches must carry ``psf``."""
        return bool(self.cls.needs_psf)


MODELS: dict[str, ModelSpec] = {
    "fovkpn": ModelSpec(
        FOVKPN,
        lambda c: FOVKPN(
            width=c.width,
            offset_channels=c.fovkpn.offset_channels,
            kernel_size=c.fovkpn.kpn_kernel,
            deform_blocks=c.fovkpn.deform_blocks,
            offset_groups=c.fovkpn.offset_groups,
            dilations=c.fovkpn.kpn_dilations,
            kernel_scale=c.fovkpn.kpn_kernel_scale,
            decoder_deform=c.fovkpn.decoder_deform,
        ),
    ),
    "wiener": ModelSpec(
        DeepWiener,
        lambda c: DeepWiener(width=c.width, **dataclasses.asdict(c.wiener)),  # [train.wiener] is its sizes
    ),
}


def model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``; an unknown name is an error listing the known ones."""
    if name not in MODELS:
        raise InputError(f"train.model: expected one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name]


def model_name(model: nn.Module) -> str | None:
    """The registry name of ``model``'s class (``None`` for an unregistered network)."""
    return next((name for name, spec in MODELS.items() if isinstance(model, spec.cls)), None)


def build_model(config: TrainConfig) -> nn.Module:
    """The network ``config.model`` names, with the sizes of ``config``, its initial weights drawn from
    ``config.seed`` alone.

    ``nn.Module`` initialisers draw from torch's global CPU generator and take no other, so it is seeded
    inside ``fork_rng``, which gives the caller's RNG state back untouched (same weights as seeding it).
    """
    spec = model_spec(config.model)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(config.seed)
        return spec.build(config)
