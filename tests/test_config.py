import json

import pytest

from degtrans.config import (
    MOVED,
    PRESETS,
    ConfigError,
    RunConfig,
    TrainConfig,
    load_config,
    preset_config,
    replace_checked,
    to_dict,
    write_resolved,
)


def test_defaults_when_no_file():
    assert load_config() == RunConfig()


def test_toml_values_are_typed(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nmodel = "wiener"\n[train.optim]\nlearning_rate = 1\n[calibrate]\nrows = 3\n')
    config = load_config(path)
    assert config.train.optim.learning_rate == 1.0 and isinstance(config.train.optim.learning_rate, float)
    assert config.train.model == "wiener"
    assert config.calibrate.rows == 3


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[train]\nlerning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"train\.lerning_rate") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_unknown_section_is_named(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[trian]\nepochs = 1\n")
    with pytest.raises(ConfigError, match="trian"):
        load_config(path)


def test_wrong_type_in_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nepochs = "many"\n')
    with pytest.raises(ConfigError, match="train.epochs.*integer"):
        load_config(path)


def test_set_overrides_are_parsed_to_the_field_type():
    config = load_config(
        None, ["train.epochs=3", "train.optim.learning_rate=1e-3", "simulate.store_raw=true"]
    )
    assert config.train.epochs == 3
    assert config.train.optim.learning_rate == pytest.approx(1e-3)
    assert config.simulate.store_raw is True


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=3.5", "integer"),
        ("train.optim.learning_rate=fast", "number"),
        ("simulate.store_raw=maybe", "boolean"),
        ("train.model=resnet", "one of"),
        ("train.nope=1", "unknown key 'train.nope'"),
        ("epochs=1", "section.key=value"),
    ],
)
def test_bad_set_override(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_resolved_config_written_as_json(tmp_path):
    config = load_config(None, ["calibrate.rows=2"])
    path = write_resolved(config, tmp_path)
    assert json.loads(path.read_text())["calibrate"]["rows"] == 2
    beside = write_resolved(config, tmp_path / "camera.npz")
    assert beside.name == "camera.npz.config.json"


def test_invalid_toml_names_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(path)


def test_sub_sections_are_nested_tables_and_dotted_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[calibrate.solve]\nsmooth_reg = 0\n[train.wiener]\nfeatures = 12\nknown_isp = false\n")
    config = load_config(path, ["calibrate.register.sigma=2.5", "train.fovkpn.kpn_dilations=1,2"])
    assert config.calibrate.solve.smooth_reg == 0.0 and config.calibrate.solve.joint_iterations == 300
    assert (config.train.wiener.features, config.train.wiener.known_isp) == (12, False)
    assert config.calibrate.register.sigma == 2.5 and config.train.fovkpn.kpn_dilations == (1, 2)
    assert json.loads(write_resolved(config, tmp_path).read_text())["train"]["wiener"]["features"] == 12


@pytest.mark.parametrize(
    "old, new",
    [("train.learning_rate", "train.optim.learning_rate"), ("train.wiener_features", "train.wiener.features"),
     ("calibrate.smooth_reg", "calibrate.solve.smooth_reg"), ("calibrate.actors", "calibrate.ray.actors"),
     ("calibrate.register_rounds", "calibrate.register.rounds"), ("train.workers", "train.ray.workers")],
)  # fmt: skip
def test_a_moved_key_names_its_new_place(tmp_path, old, new):
    assert MOVED[old] == new
    section, key = old.split(".")
    path = tmp_path / "run.toml"
    path.write_text(f"[{section}]\n{key} = 1\n")
    with pytest.raises(ConfigError, match=rf"run\.toml: '{old}' moved to '{new}'"):
        load_config(path)
    with pytest.raises(ConfigError, match=rf"--set {old}: '{old}' moved to '{new}'"):
        load_config(None, [f"{old}=1"])


@pytest.mark.parametrize(
    "toml, override, message",
    [
        ("[train.optim]\nlerning_rate = 1\n", "train.optim.lerning_rate=1",
         r"unknown key 'train\.optim\.lerning_rate' \(known keys in \[train\.optim\]"),
        ("[train]\noptim = 1\n", "train.optim=1", r"'train\.optim' is a table"),
    ],
)  # fmt: skip
def test_a_sub_section_names_itself(tmp_path, toml, override, message):
    path = tmp_path / "run.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_an_older_checkpoints_flat_config_is_read_at_the_new_places():
    flat = {"model": "wiener", "width": 16, "learning_rate": 1e-3, "ema_decay": 0.995, "wiener_features": 12,
            "wiener_stages": 3, "kpn_dilations": [1, 2], "workers": 1}  # fmt: skip
    config = replace_checked(TrainConfig(), flat, "old.pt", stored=True)
    assert (config.model, config.width, config.optim.learning_rate, config.optim.ema_decay) == (
        "wiener",
        16,
        1e-3,
        0.995,
    )
    assert (config.wiener.features, config.wiener.stages, config.fovkpn.kpn_dilations) == (12, 3, (1, 2))
    assert config.ray.workers == 1 and config.optim.weight_decay == TrainConfig().optim.weight_decay
    assert replace_checked(TrainConfig(), to_dict(config), "new.pt") == config  # a nested one as written
    with pytest.raises(ConfigError, match="'train.learning_rate' moved to 'train.optim.learning_rate'"):
        replace_checked(TrainConfig(), {"learning_rate": 1e-3}, "--set")  # a user's key is not translated


def test_presets_keep_their_values(tmp_path):
    paper = preset_config("paper")
    assert (paper.train.optim.learning_rate, paper.train.optim.lr_schedule, paper.train.optim.loss) == (
        1e-4,
        "step",
        "l2",
    )
    assert (paper.train.epochs, paper.train.fovkpn.offset_channels, paper.simulate.patch_size) == (
        50,
        32,
        128,
    )
    cpu = preset_config("bench-cpu").train
    assert (cpu.width, cpu.batch_size, cpu.optim.learning_rate, cpu.optim.warmup_steps) == (16, 8, 1e-3, 100)
    assert (cpu.optim.ema_decay, cpu.fovkpn.decoder_deform, cpu.wiener.features, cpu.wiener.stages) == (
        0.995,
        1,
        12,
        3,
    )
    reference = preset_config("bench-reference").train
    assert (reference.optim.learning_rate, reference.wiener.stages, reference.optim.ema_decay) == (
        1e-4,
        1,
        0.0,
    )
    pretrain = preset_config("pretrain-gpu")
    assert (pretrain.train.model, pretrain.train.optim.ema_decay, pretrain.simulate.patches_per_image) == (
        "wiener",
        0.998,
        64,
    )
    # A key in a sub-section merges with the preset's others there (later keys win), in a file or --set.
    overridden = load_config(None, ["train.preset=bench-cpu", "train.optim.warmup_steps=7"]).train.optim
    assert (overridden.warmup_steps, overridden.ema_decay) == (7, 0.995)
    path = tmp_path / "run.toml"
    path.write_text('[train]\npreset = "bench-cpu"\n[train.optim]\nwarmup_steps = 7\n')
    assert load_config(path).train.optim == overridden
    assert set(PRESETS) >= {"paper", "bench-cpu", "pretrain-cpu"}
