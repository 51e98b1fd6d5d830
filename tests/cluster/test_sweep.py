"""Ray Tune sweep: search-space parsing, and a two-trial ASHA sweep of distributed training runs."""

from __future__ import annotations

import csv
import json

import pytest

from degtrans.config import ConfigError, RunConfig, WorkersConfig, load_config, to_dict
from tests.cluster.helpers import tiny_dataset, tiny_train_config


def test_space_parsing_checks_fields_and_types(tmp_path):
    from degtrans.cluster.sweep import load_space

    good = tmp_path / "space.toml"
    good.write_text('[train]\nepochs = 2\n[train.optim.learning_rate]\nloguniform = [1e-4, 1e-2]\n'
                    '[train.model]\nchoice = ["fovkpn", "wiener"]\n')  # fmt: skip
    space = load_space(good)
    assert space["epochs"] == 2 and set(space) == {"epochs", "optim.learning_rate", "model"}
    for text, message in [
        ("[train.nope]\nchoice = [1]\n", "train.nope"),
        ("[train.width]\nchoice = ['wide']\n", "train.width"),
        ("[train.optim.learning_rate]\nnormal = [0, 1]\n", "loguniform"),
        ("[train.learning_rate]\nloguniform = [1e-4, 1e-2]\n", "moved to 'train.optim.learning_rate'"),
        ("[train.optim.nope]\nchoice = [1]\n", "train.optim.nope"),
        ("[simulate.seed]\nchoice = [1]\n", "[train]"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
            load_space(bad)


def test_trial_config_coerces_tune_values():
    import numpy as np

    from degtrans.cluster.sweep import trial_config

    config = trial_config(
        tiny_train_config(), {"width": np.int64(16), "optim.learning_rate": np.float64(0.01)}
    )
    assert config.width == 16 and isinstance(config.width, int) and config.optim.learning_rate == 0.01
    assert trial_config(tiny_train_config(), {"epochs": 4.0}).epochs == 4  # Tune's integral floats


def test_trial_config_rejects_what_does_not_fit_the_field():
    from degtrans.cluster.sweep import trial_config

    with pytest.raises(ConfigError, match="'optim.loss'"):
        trial_config(tiny_train_config(), {"optim.loss": "l3"})
    with pytest.raises(ConfigError, match="nope"):
        trial_config(tiny_train_config(), {"nope": 1})


@pytest.mark.ray
@pytest.mark.slow
def test_two_trial_asha_sweep(ray_session, tmp_path):
    import dataclasses

    from degtrans.cluster.sweep import run_sweep

    data = tiny_dataset(tmp_path / "data", frames=3)
    space = tmp_path / "space.toml"
    space.write_text("[train.optim.learning_rate]\ngrid = [1e-3, 1e-9]\n")
    # One worker per trial: on a machine where several Ray instances run (five engineers on one
    # host), Train V2's placement-group cleaner cannot pick its cluster through the State API and a
    # finished trial's worker group can stay reserved; the second trial must still fit.
    base = tiny_train_config(epochs=3, max_steps_per_epoch=2, ray=WorkersConfig(workers=1))
    config = dataclasses.replace(RunConfig(), train=base)
    config = dataclasses.replace(config, sweep=dataclasses.replace(config.sweep, trials=1, max_concurrent=1))
    result = run_sweep(data, space, tmp_path / "sweep", config)

    with open(result["results"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 == result["trials"]  # a grid of two values, one sample each
    psnrs = [float(r["best_val_psnr"]) for r in rows]
    assert psnrs == sorted(psnrs, reverse=True) and result["best_psnr"] == psnrs[0]
    # Which rate wins six steps of an identity-initialised network is not the sweep's business; that the
    # sweep reports the winner's config is.
    assert sorted(float(r["train.optim.learning_rate"]) for r in rows) == [1e-9, 1e-3]
    assert float(rows[0]["train.optim.learning_rate"]) == result["best_config"].optim.learning_rate
    assert all(1 <= int(r["epochs"]) <= 3 for r in rows)
    # The best config is a TOML that `degtrans train --config` reads back to the same [train] section.
    assert load_config(result["best_toml"]).train == result["best_config"]
    assert result["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Each trial ran as a distributed training run with the usual RUN/ layout, its loop holding the
    # base config with the trial's sampled field (config.json is written by the loop).
    for row in rows:
        trial = tmp_path / "sweep" / "trials" / row["trial"]
        assert (trial / "metrics.jsonl").exists()
        ran = json.loads((trial / "config.json").read_text())
        rate = float(row["train.optim.learning_rate"])
        assert ran == {**to_dict(base), "optim": {**to_dict(base)["optim"], "learning_rate": rate}}


def test_shipped_example_space_parses():
    from pathlib import Path

    from degtrans.cluster.sweep import load_space

    space = load_space(Path(__file__).resolve().parents[2] / "cluster" / "sweep.toml")
    assert {"optim.learning_rate", "optim.ssim_weight", "width", "model", "epochs"} <= set(space)
