"""One config module: frozen dataclasses per stage, loaded from TOML, typed ``--set`` overrides.

A core function receives the small section it needs (``CalibrateConfig``, ``OptimConfig``...), never
the whole ``RunConfig``. Sections group their fields in sub-sections (``[train.optim]`` in TOML,
``--set train.optim.learning_rate=1e-3``). Unknown keys are errors that name the key, and so are the
flat keys that moved into a sub-section (:data:`MOVED`); overrides are parsed to the field's type.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tomllib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from degtrans.atomic import write_atomic
from degtrans.errors import DegtransError


class ConfigError(DegtransError, ValueError):
    """A config file or override that does not fit the schema."""


@dataclass(frozen=True)
class SimulateConfig:
    """Dataset synthesis (``degtrans simulate``)."""

    patch_size: int = 256
    patches_per_image: int = 8
    seed: int = 0
    store_raw: bool = False
    fit_field: bool = False
    # "camera": the Bayer pattern of each camera's profile.
    cfa_pattern: Literal["camera", "RGGB", "BGGR", "GRBG", "GBRG"] = "camera"
    demosaic: Literal["bilinear", "malvar"] = "malvar"
    noise: bool = True
    # false (the default): the clean target is the original image through the same ISP, without the
    # CFA and demosaicking, as in the reference (Chen et al.): a target with demosaicking artefacts
    # teaches the network to reproduce them (colour zippers), and blur and demosaicking do not commute.
    # true: the target also passes the CFA + demosaicking (the pair differs only by optics and noise).
    clean_cfa: bool = False
    # log10 shot-noise range sampled per pair (Brooks et al. 2019: 1e-4 .. 1.2e-2).
    log_shot_noise_min: float = -4.0
    log_shot_noise_max: float = -1.92
    rows_per_file: int = 512
    row_group_rows: int = 64
    workers: int = 0
    # "all": every image x patch is simulated through every camera (sample id CAMERA/IMAGE/pNN);
    # "draw": each image x patch draws one camera by catalogue weight from (seed, sample_id) (IMAGE/pNN),
    # so the dataset's size does not grow with the number of cameras; "auto": all for --psf fields,
    # draw for a --cameras catalogue.
    camera_choice: Literal["auto", "all", "draw"] = "auto"
    # GPU fraction per shard task (Ray's num_gpus): > 0 develops each row group on the GPU in one pass.
    gpus_per_worker: float = 0.0


@dataclass(frozen=True)
class SolveConfig:
    """Calibration's PSF solve (``[calibrate.solve]``): priors and iterations."""

    support_radius: float = 0.0
    # Ridge weight (relative to each channel's data scale) of the Fourier and joint solves' prior.
    wiener_reg: float = 3e-4
    # Their other priors, relative to the data scale: |grad h|^2 and the centroid of the middle (green)
    # channel ((sum h y)^2 + (sum h x)^2: PSFs are stored centred, geometry is not blur).
    smooth_reg: float = 1e-3
    centroid_weight: float = 1.0
    # Conjugate-gradient steps of a tile's init (its Fourier solve).
    cg_iterations: int = 400
    # Preconditioned CG steps of the joint solve of all tiles (0: the per-tile inits alone).
    joint_iterations: int = 300


@dataclass(frozen=True)
class RegisterConfig:
    """Calibration's registration of target to photo (``[calibrate.register]``)."""

    min_inliers: int = 30
    # Fine registration: Gaussian low-pass (px) of both images. Measured on 31-px lens PSFs, noise
    # 0.003: 0.0005 px RMS geometric error with the true PSFs, whatever sigma in 2-3 (issue 11).
    sigma: float = 3.0
    # Lens distortion (k1, k2, p1, p2): "auto" adds it when the homography leaves a per-tile residual
    # shift above distortion_threshold_px (RMS).
    distortion: Literal["auto", "none", "always"] = "auto"
    distortion_threshold_px: float = 0.05
    # Registration and PSFs in turns: after the first solve, re-register against the target blurred by
    # the re-centred estimate this many times (the low-pass alone leaves a large asymmetric PSF's bias:
    # 1.2 px at the corners of the triplet lens). 0: register once on the low-pass.
    rounds: int = 2
    # How the registered target reaches the sensor in the fit: "area" (a screen or print is piecewise
    # constant and a pixel averages it over its footprint, calibrate.sensor) or "bicubic" (resampled at
    # pixel centres). Measured on the sharp-centre lens, true geometry, photographs integrating over
    # pixels: the bicubic model makes sharp PSFs broad and streaked (docs/calibration.md).
    target_model: Literal["area", "bicubic"] = "area"
    # In registration rounds after the first, refit stage I's colour matrix and offset on every pixel
    # through the current PSF estimate (the patches are not left flat by spatially variant PSFs).
    refit_colour: bool = True
    fit_gamma: bool = True


@dataclass(frozen=True)
class RejectConfig:
    """Calibration's photo rejection thresholds (``[calibrate.reject]``)."""

    # Fraction of saturated pixels allowed (a correct exposure has none).
    max_clipped: float = 0.001
    # Steepest chart tilt (degrees, assuming a 30-degree half-diagonal field); hand-held jitter is < 1.
    max_tilt_deg: float = 20.0
    # Contrast transfer at 0.08-0.12 cycles/px (quality.sharpness) below which a photo is out of focus.
    # Measured at k = 31, 256x384, charts and noise patterns alike: 0.37-0.41 for the blurry triplet
    # lens in focus, 0.75-0.86 for the phone, dslr-kit and vintage lenses, 0.13-0.18 for those behind
    # an extra 5-px defocus disc (0.08 for the triplet): about the geometric mean of the two.
    min_sharpness: float = 0.25
    # ... and relative to the run's median sharpness. An extra defocus disc of radius 3 px scales the
    # measure by 0.63-0.64, one of 2 px by 0.82 (phone-wide, sharp-centre and triplet lenses, charts and
    # noise patterns, 256x384, targets 1.5x the frame): 0.72 rejects 3 px and more, keeps 2 px.
    focus_ratio: float = 0.72
    # Low-passed correlation of photo and registered target below which it is the wrong target.
    min_correlation: float = 0.8


@dataclass(frozen=True)
class ActorsConfig:
    """Calibration's Ray resources (``[calibrate.ray]``): tile-fitting actors."""

    actors: int = 2
    gpus_per_actor: float = 0.0


@dataclass(frozen=True)
class CalibrateConfig:
    """Degradation transfer (``degtrans calibrate``)."""

    rows: int = 6
    cols: int = 8
    psf_size: int = 31
    # Pairs (the last ones) kept out of the fit to measure the re-blur PSNR on unseen photographs.
    holdout: int = 0
    camera: str = "camera"
    seed: int = 0
    solve: SolveConfig = field(default_factory=SolveConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    reject: RejectConfig = field(default_factory=RejectConfig)
    ray: ActorsConfig = field(default_factory=ActorsConfig)


@dataclass(frozen=True)
class OptimConfig:
    """Training's optimiser, loss and schedule (``[train.optim]``)."""

    learning_rate: float = 2e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    loss: Literal["l1", "l2", "psnr"] = "l1"
    ssim_weight: float = 0.0
    # Learning-rate schedule: linear warmup over ``warmup_steps``, then "cosine" decay to 1 % over the
    # run or "step" (times ``lr_step_gamma`` every ``lr_step_epochs`` epochs, the reference's).
    warmup_steps: int = 0
    lr_schedule: Literal["cosine", "step"] = "cosine"
    lr_step_epochs: int = 5
    lr_step_gamma: float = 0.5
    # Exponential moving average of the weights (0: off); validation and inference use the average.
    ema_decay: float = 0.0


@dataclass(frozen=True)
class FOVKPNConfig:
    """FOV-KPN's sizes (``[train.fovkpn]``); its width is ``train.width``."""

    # The FOV-KPN reference's: offset channels 32 (``preset = "paper"``).
    offset_channels: int = 32
    kpn_kernel: int = 5
    # Dilations of the predicted per-pixel kernels, fused by a 3x3 conv (the reference: 1-4, 17x17 support).
    kpn_dilations: tuple[int, ...] = (1, 2, 3, 4)
    # Factor on the kernel head's correction. 1 (undamped): 0.01 cut that head's effective learning
    # rate ~100x under Adam and it learnt nothing: +0.31 dB vs +1.81 dB undamped over the input after
    # 500 CPU steps on a held-out image (benchmarks/README.md).
    kpn_kernel_scale: float = 1.0
    deform_blocks: int = 2
    # DCNv2 offset groups (the reference: 8) and decoder levels, from the coarsest, with a deformable
    # block (3: all, as the reference; the full-resolution one costs most on CPU).
    offset_groups: int = 8
    decoder_deform: int = 3


@dataclass(frozen=True)
class WienerConfig:
    """Deep Wiener's sizes (``[train.wiener]``); its refinement UNet's width is ``train.width``."""

    # Feature channels: a multiple of 3 (each colour channel gets its own features).
    features: int = 24
    # Frequency bands of its learned 1/SNR.
    bands: int = 4
    # Levels of its refinement UNet (each halves the resolution, doubles the width).
    levels: int = 2
    # Refinement stages; each after the first makes the estimate consistent with the observation (a
    # half-quadratic-splitting step with the known PSFs) and refines it again.
    stages: int = 1
    # Whether it is told each pair's ISP draw and noise level. True suits simulated frames and RAW
    # photos whose metadata gives them; an sRGB photograph gives neither, so a network meant for
    # photographs trains without them (sRGB curve undone, noise estimated from the image), as it will
    # restore.
    known_isp: bool = True


@dataclass(frozen=True)
class WorkersConfig:
    """Ray Train's resources (``[train.ray]``)."""

    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: int = 1
    max_failures: int = 2


@dataclass(frozen=True)
class TrainConfig:
    """Restoration training (``degtrans train``), local or with Ray Train."""

    model: Literal["fovkpn", "wiener"] = "fovkpn"
    epochs: int = 10
    batch_size: int = 16
    # Both networks' width: the reference's 32 (``preset = "paper"``); 16 is the small variant for CPU runs.
    width: int = 32
    # A row of ``PRESETS`` (the FOV-KPN paper's schedule, the benchmarks', the pretraining's), applied
    # where it is set; later keys win.
    preset: Literal[
        "custom", "paper", "bench-cpu", "bench-gpu", "bench-reference", "pretrain-cpu", "pretrain-gpu"
    ] = "custom"
    # Weights to start from when not resuming: "" (fresh), "pretrained" (the bundled deep Wiener,
    # degtrans.restore.pretrained; the run must use its sizes) or a checkpoint path.
    init: str = ""
    # Cap on training batches per epoch (0: the whole split), for short demo runs.
    max_steps_per_epoch: int = 0
    amp: bool = True
    val_fraction: float = 0.1
    shuffle_buffer: int = 64
    seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    fovkpn: FOVKPNConfig = field(default_factory=FOVKPNConfig)
    wiener: WienerConfig = field(default_factory=WienerConfig)
    ray: WorkersConfig = field(default_factory=WorkersConfig)


@dataclass(frozen=True)
class SweepConfig:
    """Hyper-parameter sweeps (``degtrans sweep``)."""

    trials: int = 16
    max_concurrent: int = 2
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: int = 1
    reduction_factor: int = 2
    seed: int = 0


@dataclass(frozen=True)
class RestoreConfig:
    """Full-resolution tiled inference and classical baselines (``degtrans restore``)."""

    tile_size: int = 256
    overlap: int = 32
    max_tiles_in_memory: int = 8
    # Networks: average each tile's restoration with those of its mirror images (4x the time; +0.07
    # dB for deep Wiener on the restoration benchmark's held-out frames). Assumes a mirror-symmetric
    # lens (degtrans.restore.infer.flip_ensemble).
    self_ensemble: bool = False
    # Classical baselines (noise-aware): the residual they may leave, in units of the noise variance
    # (Morozov's principle is 1; 0.5 measured best on noisy frames through the camera chain: the
    # principle oversmooths there), and the most Richardson-Lucy iterations.
    discrepancy: float = 0.5
    # The Wiener filter's weakest prior weight (see degtrans.restore.baselines.MIN_LAMBDA): model
    # errors (demosaicking, clipping) that the noise level does not show need a floor; its best value
    # depends on the lens (``benchmarks/restore.py`` tunes it and the discrepancy on training frames).
    wiener_min_lambda: float = 0.1
    # Richardson-Lucy's stop (noise variances; see degtrans.restore.baselines.RL_DISCREPANCY).
    rl_discrepancy: float = 4.0
    rl_iterations: int = 50
    # Richardson-Lucy's updates before its stop is checked: from the observation, whose residual is
    # often within the noise already, a stop checked at once returns the input unchanged. 0 keeps RL
    # never below the input on noisy frames (a forced step there can cost 0.15 dB); the benchmarks tune
    # it with the stop (degtrans.restore.evaluate.RL_GRID).
    rl_min_iterations: int = 0
    # ``degtrans evaluate``: crops in its picture, and a cap on evaluated samples (0: all of the split).
    eval_crops: int = 4
    eval_max_samples: int = 0


# Settings a ``train.preset`` stands for, by section (nested as the sections are): the one table of
# training recipes. Unless a row says otherwise, the model is left to ``train.model``.
_BENCH = {"learning_rate": 1e-3, "lr_schedule": "cosine"}
# fmt: off
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "custom": {},
    # FOV-KPN as Chen et al. trained it (TanGeeGo/DegradationTransfer): 32 channels, 32 offset channels
    # (8 groups), KPN 5 at dilations 1-4, patch 128, batch 16, 50 epochs, lr 1e-4 halved every 5
    # epochs, L2 (their VGG term needs weights we cannot download), no weight decay, no EMA.
    "paper": {
        "train": {
            "width": 32,
            "batch_size": 16,
            "epochs": 50,
            "fovkpn": {"offset_channels": 32, "offset_groups": 8, "kpn_kernel": 5,
                       "kpn_dilations": (1, 2, 3, 4), "kpn_kernel_scale": 1.0, "decoder_deform": 3},
            "optim": {"learning_rate": 1e-4, "lr_schedule": "step", "lr_step_epochs": 5, "lr_step_gamma": 0.5,
                      "warmup_steps": 0, "ema_decay": 0.0, "weight_decay": 0.0, "loss": "l2",
                      "ssim_weight": 0.0},
        },
        "simulate": {"patch_size": 128},
    },
    # The restoration benchmarks' (benchmarks/restore.py, transfer.py) fixed-step runs, AdamW with
    # warmup and a cosine over the run. On the CPU (issue 12's budget): width 16 at 96², batch 8, and
    # FOV-KPN's small variant with a deformable block at the coarsest decoder level only (the
    # full-resolution one costs a third of a step). Deep Wiener's half-quadratic-splitting stages,
    # held-out dB at 2,000 steps on the sample images: 1 stage 25.72; 2 stages 26.10 / 25.90 (seeds
    # 0 / 1); 3 stages 26.23 / 25.93 (benchmarks/README.md, third round).
    "bench-cpu": {
        "train": {"width": 16, "batch_size": 8, "optim": {**_BENCH, "warmup_steps": 100, "ema_decay": 0.995},
                  "fovkpn": {"offset_channels": 16, "decoder_deform": 1},
                  "wiener": {"features": 12, "stages": 3}},
        "simulate": {"patch_size": 96},
    },
    # One device call (an H200, <= 8 min in all): the reference's sizes, trained for a time budget.
    "bench-gpu": {
        "train": {"width": 32, "batch_size": 16, "optim": {**_BENCH, "warmup_steps": 300, "ema_decay": 0.999},
                  "fovkpn": {"offset_channels": 32, "decoder_deform": 3},
                  "wiener": {"features": 24, "stages": 3}},
        "simulate": {"patch_size": 128},
    },
    # The reference's sizes (width 32, 32 offset channels, patch 128) at its learning rate, on the
    # benchmarks' cosine (not the paper's step schedule, loss or weight decay: see "paper"); deep
    # Wiener with one stage (the reference, Dong et al., has no HQS stages).
    "bench-reference": {
        "train": {"width": 32, "batch_size": 16,
                  "optim": {**_BENCH, "learning_rate": 1e-4, "warmup_steps": 0, "ema_decay": 0.0},
                  "fovkpn": {"offset_channels": 32, "decoder_deform": 3},
                  "wiener": {"features": 24, "stages": 1}},
        "simulate": {"patch_size": 128},
    },
    # The bundled deep Wiener (degtrans.restore.pretrain): the CPU benchmark's network (width 16, 12
    # features, 3 stages, 96², batch 8), for more steps, on every pair (no validation split).
    "pretrain-cpu": {
        "train": {"model": "wiener", "width": 16, "batch_size": 8, "val_fraction": 0.0,
                  "optim": {**_BENCH, "warmup_steps": 100, "ema_decay": 0.995},
                  "wiener": {"features": 12, "stages": 3}},
        "simulate": {"patch_size": 96, "patches_per_image": 24},
    },
    # One device call (unmeasured: no GPU has run it). The same network with larger batches and
    # patches; its steps assume ~500 patches/s for 3 stages (1,089 were measured for 1 stage at 128²).
    "pretrain-gpu": {
        "train": {"model": "wiener", "width": 16, "batch_size": 16, "val_fraction": 0.0,
                  "optim": {**_BENCH, "warmup_steps": 200, "ema_decay": 0.998},
                  "wiener": {"features": 12, "stages": 3}},
        "simulate": {"patch_size": 128, "patches_per_image": 64},
    },
}
# fmt: on


# ``degtrans train`` on a CPU builds these sizes unless the config or ``--set`` gives them: FOV-KPN at
# the reference's sizes trains at 1-3 patches/s on two cores (800 steps take over an hour); the small
# variant at 3.6 patches/s on one (benchmarks/README.md, restoration).
CPU_SIZES: dict[str, Any] = {"width": 16, "fovkpn.offset_channels": 16, "fovkpn.decoder_deform": 1}


@dataclass(frozen=True)
class RunConfig:
    """Every stage's section; what ``--config FILE`` and ``--set`` fill."""

    simulate: SimulateConfig = field(default_factory=SimulateConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    restore: RestoreConfig = field(default_factory=RestoreConfig)


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field's type (parsing strings from ``--set``), or raise ``ConfigError``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{where}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        errors = []
        for option in typing.get_args(annotation):
            if option is type(None) and value in (None, "none", "None"):
                return None
            try:
                return coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(coerce(v, item_type, where) for v in value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected a boolean (true/false), got {value!r}")
    if annotation in (int, float):
        # bool is an int to Python, but true is no number here; an int field takes no float (1.0).
        numbers = (int,) if annotation is int else (int, float)
        if isinstance(value, (*numbers, str)) and not isinstance(value, bool):
            with contextlib.suppress(ValueError):
                return annotation(value)
        kind = "an integer" if annotation is int else "a number"
        raise ConfigError(f"{where}: expected {kind}, got {value!r}")
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {annotation!r}")


def _section_paths(cls: type = RunConfig, path: str = "") -> dict[type, str]:
    """``{section class: its dotted place}`` (``OptimConfig: "train.optim"``) below ``cls``."""
    paths = {}
    for name, annotation in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(annotation):
            place = f"{path}.{name}" if path else name
            paths[annotation] = place
            paths.update(_section_paths(annotation, place))
    return paths


_PATHS = _section_paths()
# Keys renamed as they moved into a sub-section (the others kept their names).
_RENAMED = {
    "calibrate.register.sigma": "register_sigma",
    "calibrate.register.rounds": "register_rounds",
    **{
        f"train.wiener.{name}": f"wiener_{name}"
        for name in ("features", "bands", "levels", "stages", "known_isp")
    },
}
# The flat keys that moved into the sub-sections (``train.learning_rate``), with their places now
# (``train.optim.learning_rate``). In a config file or ``--set`` an old key is an error naming its
# place; a stored config (an older checkpoint's) is read at it.
MOVED: dict[str, str] = {
    f"{place.split('.')[0]}.{_RENAMED.get(f'{place}.{name}', name)}": f"{place}.{name}"
    for cls, place in _PATHS.items()
    if place.count(".") == 1
    for name in typing.get_type_hints(cls)
}


def _check_moved(key: str, where: str) -> None:
    if key in MOVED:
        raise ConfigError(f"{where}: '{key}' moved to '{MOVED[key]}'")


def _build_section(cls: type, values: dict[str, Any], source: str, section: str) -> Any:
    hints = typing.get_type_hints(cls)
    for key in values:
        _check_moved(f"{section}.{key}", source)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{section}.{unknown[0]}' "
            f"(known keys in [{section}]: {', '.join(sorted(hints))})"
        )
    parsed = {}
    for name, value in values.items():
        where = f"{source}: '{section}.{name}'"
        if not dataclasses.is_dataclass(hints[name]):
            parsed[name] = coerce(value, hints[name], where)
        elif isinstance(value, dict):
            parsed[name] = _build_section(hints[name], value, source, f"{section}.{name}")
        else:
            raise ConfigError(f"{where} is a table ([{section}.{name}]), got {value!r}")
    return cls(**parsed)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``over``, tables merged key by key (a preset's values under the user's)."""
    merged = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _deep_merge(merged[key], value) if both else value
    return merged


def from_dict(data: dict[str, Any], source: str = "<config>") -> RunConfig:
    """Build a ``RunConfig`` from nested dicts ``{section: {key: value or {key: value}}}``, rejecting
    unknown and moved keys."""
    sections = typing.get_type_hints(RunConfig)
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"{source}: unknown section '{unknown[0]}' (known: {', '.join(sections)})")
    train = data.get("train", {})
    preset = train.get("preset", "custom") if isinstance(train, dict) else "custom"
    preset_values = PRESETS.get(preset, {})  # an unknown name is reported by the train section
    built = {}
    for name, cls in sections.items():
        values = data.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: '{name}' must be a table, got {values!r}")
        built[name] = _build_section(cls, _deep_merge(preset_values.get(name, {}), values), source, name)
    return RunConfig(**built)


def _read_toml(path: str | os.PathLike | None) -> dict[str, Any]:
    """A config file's tables (none without a file)."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: config file not found") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from error


def _split_overrides(overrides: list[str] | tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """``(dotted key, value)`` of each ``section.key=value``, unstripped, checked as it is reached."""
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        yield dotted, raw


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Read ``path`` (TOML; defaults if ``None``) and apply typed ``section.key=value`` overrides
    (``section.sub.key=value`` in a sub-section)."""
    config = from_dict(_read_toml(path), "<defaults>" if path is None else str(path))
    for dotted, raw in _split_overrides(overrides):
        section, key = dotted.strip().split(".", 1)
        config = replace_field(config, section, key, raw.strip(), f"--set {dotted}")
    return config


def _replace_path(node: Any, names: list[str], value: Any, where: str, path: str = "") -> Any:
    """``node`` with the field at ``names`` (a path into its sub-sections) set to ``value``, type-checked."""
    hints = typing.get_type_hints(type(node))
    name, rest = names[0], names[1:]
    dotted = f"{path}.{name}" if path else name
    _check_moved(dotted, where)
    if name not in hints and not path:
        raise ConfigError(f"{where}: unknown section '{name}' (known: {', '.join(hints)})")
    if name not in hints or (rest and not dataclasses.is_dataclass(hints[name])):
        shown = ".".join([dotted, *rest[:1]]) if name in hints else dotted
        raise ConfigError(
            f"{where}: unknown key '{shown}' (known keys in [{path}]: {', '.join(sorted(hints))})"
        )
    if rest:
        return dataclasses.replace(
            node, **{name: _replace_path(getattr(node, name), rest, value, where, dotted)}
        )
    if dataclasses.is_dataclass(hints[name]):
        raise ConfigError(f"{where}: '{dotted}' is a table: set one of its keys ({dotted}.KEY=VALUE)")
    return dataclasses.replace(node, **{name: coerce(value, hints[name], where)})


def _apply_values(node: Any, values: dict[str, Any]) -> Any:
    """``node`` with nested ``values`` (a preset's row, trusted) replaced into it and its sub-sections."""
    changes = {k: _apply_values(getattr(node, k), v) if isinstance(v, dict) else v for k, v in values.items()}
    return dataclasses.replace(node, **changes)


def replace_field(
    config: RunConfig, section: str, key: str, value: Any, where: str | None = None
) -> RunConfig:
    """Return ``config`` with ``section.key`` set to ``value`` (type-checked; strings are parsed);
    ``key`` is dotted in a sub-section (``optim.learning_rate``)."""
    where = where or f"{section}.{key}"
    config = _replace_path(config, [section, *key.split(".")], value, where)
    if section == "train" and key == "preset":
        config = _apply_values(config, PRESETS[config.train.preset])
    return config


def preset_config(name: str) -> RunConfig:
    """The defaults with ``train.preset = name`` applied (``ConfigError`` for an unknown name)."""
    return replace_field(RunConfig(), "train", "preset", name, "train.preset")


def _dotted_keys(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables flattened to ``{"optim.learning_rate": value}``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(
            _dotted_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value}
        )
    return flat


def given_keys(
    path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...], section: str
) -> set[str]:
    """The keys of ``section`` (dotted in its sub-sections: ``fovkpn.offset_channels``) that a config
    file or ``--set`` overrides give (a preset's keys too): the ones a default that depends on the
    machine must leave alone."""
    data = _read_toml(path)
    pairs = [(dotted.strip(), raw.strip()) for dotted, raw in _split_overrides(overrides)]
    keys = set(_dotted_keys(data.get(section, {})))
    keys |= {dotted.split(".", 1)[1] for dotted, _ in pairs if dotted.startswith(f"{section}.")}
    presets = [data.get("train", {}).get("preset", "custom")]
    presets += [raw for dotted, raw in pairs if dotted == "train.preset"]
    for preset in presets:
        keys |= set(_dotted_keys(PRESETS.get(preset, {}).get(section, {})))
    return keys


def small_on_cpu(train: TrainConfig, given: set[str]) -> tuple[TrainConfig, dict[str, Any]]:
    """``train`` with the :data:`CPU_SIZES` that ``given`` (:func:`given_keys`) leaves open; returns it
    and the values changed."""
    current = _dotted_keys(to_dict(train))
    changes = {k: v for k, v in CPU_SIZES.items() if k not in given and current[k] != v}
    return replace_checked(train, changes, "CPU_SIZES"), changes


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples as lists), for JSON and TOML."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def write_resolved(config: Any, directory_or_file: str | os.PathLike, name: str = "config.json") -> Path:
    """Write the resolved config as JSON next to an output (atomically).

    ``directory_or_file`` is a run directory (the file goes inside) or an output file
    (the file goes beside it as ``<output>.config.json``).
    """
    target = Path(directory_or_file)
    path = target / name if target.is_dir() else target.with_name(target.name + ".config.json")
    return write_atomic(path, json.dumps(to_dict(config), indent=2, sort_keys=True))


def replace_checked(section: Any, changes: dict[str, Any], where: str, stored: bool = False) -> Any:
    """``dataclasses.replace`` of a config section with type-checked values (strings are parsed).

    For sections that travel whole (Ray pickles them) and get fields merged in: a sweep trial's
    sampled values, a checkpoint's stored config. Keys are dotted in sub-sections
    (``optim.learning_rate``) or nested tables (:func:`to_dict`'s). Unknown keys are errors naming
    ``where``; so are keys that moved (:data:`MOVED`), unless ``stored`` (a config degtrans wrote,
    such as an older checkpoint's flat one): those are read at their new place.
    """
    place = _PATHS[type(section)]
    for key, value in _dotted_keys(changes).items():
        old = f"{place}.{key}"
        if stored and old in MOVED:
            key = MOVED[old].removeprefix(f"{place}.")
        section = _replace_path(section, key.split("."), value, f"{where}: '{key}'", place)
    return section
