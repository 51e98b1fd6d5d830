import json

import pytest

from degtrans.config import ConfigError, RunConfig, load_config, write_resolved


def test_defaults_when_no_file():
    assert load_config() == RunConfig()


def test_toml_values_are_typed(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nlearning_rate = 1\nmodel = "wiener"\n[calibrate]\nrows = 3\n')
    config = load_config(path)
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
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
    config = load_config(None, ["train.epochs=3", "train.learning_rate=1e-3", "simulate.store_raw=true"])
    assert config.train.epochs == 3
    assert config.train.learning_rate == pytest.approx(1e-3)
    assert config.simulate.store_raw is True


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=3.5", "integer"),
        ("train.learning_rate=fast", "number"),
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
