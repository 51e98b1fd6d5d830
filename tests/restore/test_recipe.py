"""The training recipe: schedule, weight EMA, and the presets."""

import pytest
import torch

from degtrans.config import (
    PRESETS,
    ConfigError,
    OptimConfig,
    TrainConfig,
    WienerConfig,
    from_dict,
    load_config,
    preset_config,
)
from degtrans.restore.checkpoint import load_checkpoint, model_from_checkpoint
from degtrans.restore.loop import train_local
from degtrans.restore.recipe import WeightEMA, lr_factor, make_scheduler


def test_warmup_then_cosine_to_one_percent():
    config = TrainConfig(epochs=1, optim=OptimConfig(warmup_steps=10, lr_schedule="cosine"))
    factors = [lr_factor(s, config, steps_per_epoch=110, total_steps=110) for s in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))
    assert lr_factor(110, config, 110, 110) == pytest.approx(0.01)


def test_step_schedule_halves_every_five_epochs():
    config = TrainConfig(
        epochs=20, optim=OptimConfig(lr_schedule="step", lr_step_epochs=5, lr_step_gamma=0.5)
    )
    assert [lr_factor(e * 7, config, 7, 140) for e in (0, 4, 5, 10, 19)] == [1.0, 1.0, 0.5, 0.25, 0.125]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=7)
    for _ in range(35):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.5**1)


def test_weight_ema_follows_the_model_slowly():
    model = torch.nn.Linear(2, 1)
    ema = WeightEMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, start + 0.1)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(model, 1.0)


def test_paper_preset_sets_the_reference_settings_and_later_keys_win():
    config = load_config(None, ["train.preset=paper", "train.epochs=3"])
    train, optim, fovkpn = config.train, config.train.optim, config.train.fovkpn
    assert (train.width, fovkpn.offset_channels, fovkpn.kpn_kernel, train.batch_size) == (32, 32, 5, 16)
    assert (optim.learning_rate, optim.lr_schedule, optim.lr_step_epochs, optim.lr_step_gamma) == (
        1e-4,
        "step",
        5,
        0.5,
    )
    assert fovkpn.kpn_dilations == (1, 2, 3, 4) and fovkpn.offset_groups == 8 and train.epochs == 3
    assert config.simulate.patch_size == 128
    # In a TOML file the preset sits under the keys written beside it.
    from_file = from_dict({"train": {"preset": "paper", "optim": {"learning_rate": 2e-4}}})
    assert from_file.train.optim.learning_rate == 2e-4 and from_file.train.epochs == 50
    with pytest.raises(ConfigError, match="preset"):
        load_config(None, ["train.preset=fast"])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_train_preset_value_and_sets_what_it_says(name):
    run = preset_config(name)
    assert run.train.preset == name

    def picked(node, values):  # node's fields named in values, sub-sections as nested dicts
        return {
            k: picked(getattr(node, k), v) if isinstance(v, dict) else getattr(node, k)
            for k, v in values.items()
        }

    for section, values in PRESETS[name].items():
        assert picked(getattr(run, section), values) == values
    assert load_config(None, [f"train.preset={name}"]) == run


def test_training_with_ema_validates_and_restores_the_average(tmp_path, toy_data):
    config = TrainConfig(
        model="wiener",
        width=4,
        epochs=1,
        batch_size=4,
        wiener=WienerConfig(features=6),
        optim=OptimConfig(ema_decay=0.5, warmup_steps=2),
    )
    result = train_local(toy_data, tmp_path / "run", config, progress=False)
    state = load_checkpoint(result["last"])
    average = state["extra"]["ema"]
    assert any(not torch.equal(average[k], v) for k, v in state["model"].items())
    model, _ = model_from_checkpoint(result["last"])
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, average[name])
