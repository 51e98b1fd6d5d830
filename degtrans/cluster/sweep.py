"""Hyper-parameter sweeps with Ray Tune: each trial is a distributed training run (``build_trainer``).

Train V2 pattern (https://docs.ray.io/en/latest/train/user-guides/hyperparameter-optimization.html):
Tune runs a function that builds a ``TorchTrainer`` with ``TuneReportCallback`` and the trial id in
its run name, then ``fit()``s it; rank 0's per-epoch metrics reach Tune, where ASHA stops weak
trials on validation PSNR.

The search space is a TOML file over ``[train]`` fields (a sub-section's as ``[train.optim.KEY]``)::

    [train.optim.learning_rate]
    loguniform = [1e-4, 1e-2]
    [train.width]
    choice = [8, 16]
    [train.model]
    choice = ["fovkpn", "wiener"]

Distributions: ``choice``, ``grid``, ``uniform``, ``loguniform``, ``randint`` (``[low, high)``), or a
plain value for a fixed field.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import tomllib
import typing
from pathlib import Path
from typing import Any

import ray
import ray.tune
import ray.tune.schedulers
import ray.tune.search
import tomli_w
from ray.tune.integration.ray_train import TuneReportCallback

from degtrans.atomic import atomic_path, write_atomic
from degtrans.cluster.session import ensure_ray
from degtrans.cluster.train import build_trainer
from degtrans.config import (
    MOVED,
    ConfigError,
    RunConfig,
    TrainConfig,
    coerce,
    replace_checked,
    to_dict,
)
from degtrans.errors import DegtransError
from degtrans.figures import pyplot, save_figure

METRIC = "val_psnr"
DISTRIBUTIONS = {
    "choice": lambda v: ray.tune.choice(list(v)),
    "grid": lambda v: ray.tune.grid_search(list(v)),
    "uniform": lambda v: ray.tune.uniform(*v),
    "loguniform": lambda v: ray.tune.loguniform(*v),
    "randint": lambda v: ray.tune.randint(*v),
}


def load_space(path: Path) -> dict[str, Any]:
    """Read a search space TOML into ``{train_field: tune distribution or value}`` (fields of a
    sub-section dotted: ``optim.learning_rate``).

    Raises:
        ConfigError naming the file and key for unknown sections, fields or distributions, and
        for values that do not fit the field's type.
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: search space file not found") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from error
    unknown = sorted(set(data) - {"train"})
    if unknown or not data.get("train"):
        raise ConfigError(f"{path}: the search space is a [train] table of fields (found {sorted(data)})")
    return _space(data["train"], TrainConfig, "", path)


def _space(table: dict[str, Any], section: type, prefix: str, path: Path) -> dict[str, Any]:
    """``{dotted field: distribution or value}`` of one (sub-)section's table of the search space."""
    hints = typing.get_type_hints(section)
    space: dict[str, Any] = {}
    for key, spec in table.items():
        dotted = f"{prefix}{key}"
        where = f"{path}: 'train.{dotted}'"
        if f"train.{dotted}" in MOVED:
            raise ConfigError(f"{where}: moved to '{MOVED[f'train.{dotted}']}'")
        if key not in hints:
            raise ConfigError(f"{where}: unknown field (known: {', '.join(sorted(hints))})")
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(spec, dict):
                raise ConfigError(f"{where}: a sub-section is a table of fields, got {spec!r}")
            space.update(_space(spec, hints[key], f"{dotted}.", path))
            continue
        if not isinstance(spec, dict):
            space[dotted] = coerce(spec, hints[key], where)
            continue
        if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise ConfigError(f"{where}: expected one of {sorted(DISTRIBUTIONS)} = [...], got {spec!r}")
        kind, values = next(iter(spec.items()))
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {kind} needs a non-empty list, got {values!r}")
        if kind in ("choice", "grid"):
            values = [coerce(v, hints[key], where) for v in values]
        elif len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
            raise ConfigError(f"{where}: {kind} needs [low, high], got {values!r}")
        space[dotted] = DISTRIBUTIONS[kind](values)
    return space


def _plain(value: Any) -> Any:
    """A Tune sample as a plain Python value (numpy scalars; integral floats for integer fields)."""
    value = value.item() if hasattr(value, "item") else value
    return int(value) if isinstance(value, float) and value.is_integer() else value


def trial_config(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """``base`` with a trial's sampled fields, type-checked by the config module."""
    return replace_checked(base, {key: _plain(value) for key, value in params.items()}, "trial field train")


def _run_trial(params: dict[str, Any], base: TrainConfig, data_dir: Path, out: Path) -> None:
    """One Tune trial: a distributed training run whose per-epoch metrics go to Tune.

    ``params`` holds only the swept fields; ``base`` (the whole ``TrainConfig``) and the paths come
    through ``tune.with_parameters``.
    """
    trial_id = ray.tune.get_context().get_trial_id()
    trainer = build_trainer(
        data_dir,
        out / "trials" / trial_id,
        trial_config(base, params),
        name=f"trial-{trial_id}",
        callbacks=[TuneReportCallback()],
    )
    trainer.fit()


def run_sweep(
    data_dir: Path,
    space_path: Path,
    out: Path,
    config: RunConfig,
    address: str | None = None,
) -> dict[str, Any]:
    """Run ``config.sweep.trials`` trials of distributed training over the space in ``space_path``.

    Args:
        data_dir: a pair dataset (``degtrans simulate`` output).
        space_path: the search space TOML (see the module docstring).
        out: ``SWEEP/``: ``results.csv`` (one row per trial, best first), ``best.toml`` (the best
            trial's full config, for ``degtrans train --config``), ``psnr.png`` (validation PSNR per
            epoch of every trial), ``trials/<id>/`` (each trial's run directory), ``tune/`` (Ray's state).
        config: ``config.train`` is the base of every trial; ``config.sweep`` sets trials, concurrency
            and the scheduler (ASHA on ``val_psnr`` over epochs, or FIFO).
        address: ``None`` for an embedded local Ray, else a cluster address.

    Returns:
        ``{"best_config": TrainConfig, "best_psnr": float, "results": Path, "best_toml": Path,
        "plot": Path, "trials": int}``.
    """
    sweep = config.sweep
    data_dir, out = Path(data_dir).resolve(), Path(out).resolve()
    space = load_space(space_path)
    if sweep.trials < 1 or sweep.max_concurrent < 1:
        raise ConfigError(f"sweep.trials and sweep.max_concurrent must be >= 1, got {sweep}")
    out.mkdir(parents=True, exist_ok=True)
    ensure_ray(address)
    scheduler = None
    if sweep.scheduler == "asha":
        scheduler = ray.tune.schedulers.ASHAScheduler(
            time_attr="training_iteration",
            max_t=max(config.train.epochs, 1),
            grace_period=sweep.grace_period,
            reduction_factor=sweep.reduction_factor,
        )
    tuner = ray.tune.Tuner(
        ray.tune.with_parameters(_run_trial, base=config.train, data_dir=data_dir, out=out),
        param_space=space,
        tune_config=ray.tune.TuneConfig(
            metric=METRIC,
            mode="max",
            num_samples=sweep.trials,
            scheduler=scheduler,
            # Seeded sampling: the same sweep.seed draws the same trial configs. The concurrency limit
            # goes here: Tune ignores max_concurrent_trials when given a BasicVariantGenerator.
            search_alg=ray.tune.search.BasicVariantGenerator(
                random_state=sweep.seed, max_concurrent=sweep.max_concurrent
            ),
        ),
        run_config=ray.tune.RunConfig(name="tune", storage_path=str(out)),
    )
    grid = tuner.fit()
    rows = []
    for result in grid:
        frame = result.metrics_dataframe
        history = frame[METRIC].tolist() if frame is not None and METRIC in frame else []
        params = dict(result.config or {})
        rows.append(
            {
                "trial": _trial_name(out, result),
                **{f"train.{k}": v for k, v in params.items()},
                "epochs": len(history),
                "best_val_psnr": max(history) if history else math.nan,
                "last_val_psnr": history[-1] if history else math.nan,
                "stopped_early": bool(history) and len(history) < config.train.epochs,
                "error": str(result.error).splitlines()[0] if result.error else "",
                "_params": params,
                "_history": history,
            }
        )
    finished = [r for r in rows if not math.isnan(r["best_val_psnr"])]
    if not finished:
        errors = "; ".join(r["error"] for r in rows if r["error"]) or "no trial reported a metric"
        raise DegtransError(f"{out}: every trial failed: {errors}")
    rows.sort(key=lambda r: -r["best_val_psnr"] if not math.isnan(r["best_val_psnr"]) else math.inf)
    best = rows[0]
    best_config = trial_config(config.train, best["_params"])
    results = out / "results.csv"
    columns = list(dict.fromkeys(k for row in rows for k in row if not k.startswith("_")))
    with atomic_path(results) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    resolved = tomli_w.dumps(to_dict(dataclasses.replace(config, train=best_config)))  # for train --config
    best_toml = write_atomic(out / "best.toml", "# best trial of a degtrans sweep\n" + resolved)
    plot = draw_sweep(rows, out / "psnr.png")
    return {
        "best_config": best_config,
        "best_psnr": best["best_val_psnr"],
        "best_trial": best["trial"],
        "results": results,
        "best_toml": best_toml,
        "plot": plot,
        "trials": len(rows),
    }


def _trial_name(out: Path, result: Any) -> str:
    """The name of the trial's ``trials/<trial_id>`` directory (Tune names its own dirs
    ``_run_trial_<id>_...``), else of Tune's (``?`` without one)."""
    name = Path(result.path).name if result.path else "?"
    trials = out / "trials"
    if not trials.is_dir() or not result.path:
        return name
    return next((candidate.name for candidate in trials.iterdir() if candidate.name in name), name)


def draw_sweep(rows: list[dict[str, Any]], png: Path) -> Path:
    """Validation PSNR per epoch of every trial (ASHA-stopped trials end early), as a PNG."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row in rows:
        history = row["_history"]
        if not history:
            continue
        short = {k: f"{v:.3g}" if isinstance(v, float) else v for k, v in row["_params"].items()}
        label = ", ".join(f"{k}={v}" for k, v in short.items()) or row["trial"]
        style = "--" if row["stopped_early"] else "-"
        ax.plot(range(1, len(history) + 1), history, style, marker="o", label=label)
    ax.set(
        xlabel="epoch",
        ylabel="validation PSNR (dB)",
        title="sweep: validation PSNR per trial (dashed: stopped)",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, png, dpi=100)


def summary_line(result: dict[str, Any]) -> str:
    """One line for the CLI: best trial, its PSNR and its config."""
    config = json.dumps(to_dict(result["best_config"]), sort_keys=True)
    return (
        f"best of {result['trials']} trials: {result['best_trial']} with validation PSNR "
        f"{result['best_psnr']:.2f} dB; config {result['best_toml']} ({config})"
    )
