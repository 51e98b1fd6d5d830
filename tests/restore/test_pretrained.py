"""The bundled pretrained deep Wiener's plumbing, with a tiny exported model standing in for the bundle.

The real ``degtrans/data/models/deep-wiener.pt`` is made by ``benchmarks/pretrain.py``; these tests
point ``PRETRAINED`` at a tiny export so that loading, restoring, starting a run and the errors for a
missing file are checked whether or not an installation ships it.
"""

import dataclasses

import numpy as np
import pytest
import torch

import degtrans.restore.pretrained as pretrained
from degtrans.cli import EXIT_USAGE, main
from degtrans.config import TrainConfig, WienerConfig
from degtrans.io import read_image, write_image
from degtrans.restore.checkpoint import load_checkpoint
from degtrans.restore.models import build_model
from degtrans.restore.models.wiener import DeepWiener
from degtrans.restore.pretrained import (
    check_init,
    export_pretrained,
    init_weights,
    load_pretrained,
    pretrained_path,
)

TINY = TrainConfig(model="wiener", width=4, wiener=WienerConfig(features=6, stages=2))
PROVENANCE = {"lenses": 3, "steps": 10, "command": "benchmarks/pretrain.py --recipe tiny"}


def trained_like(config: TrainConfig) -> torch.nn.Module:
    """``config``'s network with every weight moved off its initial value (zero-initialised heads too)."""
    model = build_model(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return model


def assert_same_weights(actual: torch.nn.Module, expected: torch.nn.Module) -> None:
    for name, value in expected.state_dict().items():
        # float16 storage: ~1e-3 relative, as the suite's half-precision tolerance.
        torch.testing.assert_close(actual.state_dict()[name].float(), value.float(), rtol=1e-3, atol=1e-4,
                                   msg=name)  # fmt: skip


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    """A tiny deep Wiener exported as the bundle; returns the float32 model that was exported."""
    model = trained_like(TINY)
    path = export_pretrained(model, TINY, tmp_path / "models" / "deep-wiener.pt", PROVENANCE)
    monkeypatch.setattr(pretrained, "PRETRAINED", path)
    return model


@pytest.fixture
def no_bundle(tmp_path, monkeypatch):
    """An installation without the bundle; returns the path it would have."""
    missing = tmp_path / "models" / "deep-wiener.pt"
    monkeypatch.setattr(pretrained, "PRETRAINED", missing)
    return missing


def test_export_is_half_precision_without_optimizer_and_keeps_its_provenance(bundle):
    state = load_checkpoint(pretrained_path())
    weights = [v for v in state["model"].values() if v.is_floating_point()]
    assert weights and all(v.dtype == torch.float16 for v in weights)
    assert state["optimizer"] is None and state["scheduler"] is None
    assert state["train_config"] == TINY
    assert state["extra"]["pretrained"] == PROVENANCE
    assert all(p.dtype == torch.float32 for p in bundle.parameters())  # the caller's model is left alone


def test_load_pretrained_gives_a_float32_deep_wiener_in_eval_mode(bundle):
    model, config = load_pretrained()
    assert isinstance(model, DeepWiener) and config == TINY and not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert_same_weights(model, bundle)


def test_init_weights_copies_the_bundle_or_a_checkpoint(bundle, tmp_path):
    fresh = build_model(dataclasses.replace(TINY, seed=1))
    init_weights(fresh, "pretrained")
    assert_same_weights(fresh, bundle)

    other = trained_like(dataclasses.replace(TINY, seed=2))
    checkpoint = export_pretrained(other, TINY, tmp_path / "other.pt", {})
    init_weights(fresh, str(checkpoint))
    assert_same_weights(fresh, other)


def test_init_weights_refuses_a_network_of_other_sizes_naming_the_file(bundle):
    wider = build_model(dataclasses.replace(TINY, width=8))
    with pytest.raises(ValueError, match=r"train.init='pretrained'.*deep-wiener\.pt.*'width': 4"):
        init_weights(wider, "pretrained")
    with pytest.raises(ValueError, match="does not fit"):
        check_init(
            dataclasses.replace(TINY, init="pretrained", wiener=dataclasses.replace(TINY.wiener, features=9))
        )


def test_restore_with_only_a_field_uses_the_bundle(bundle, tmp_path, toy_field, capsys):
    photo = write_image(tmp_path / "photo.png", np.random.default_rng(0).random((*toy_field.image_size, 3)))
    camera = toy_field.save(tmp_path / "cam.npz")
    out = tmp_path / "out.png"
    assert main(["restore", str(photo), "--field", str(camera), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    restored = read_image(out)
    assert restored.shape == (*toy_field.image_size, 3) and np.isfinite(restored).all()


def test_a_missing_bundle_is_named_by_the_api_and_the_cli(no_bundle, tmp_path, toy_field, capsys):
    with pytest.raises(FileNotFoundError, match=r"deep-wiener\.pt: the bundled deep Wiener weights"):
        pretrained_path()
    photo = write_image(tmp_path / "photo.png", np.zeros((*toy_field.image_size, 3)))
    camera = toy_field.save(tmp_path / "cam.npz")
    out = tmp_path / "out.png"
    assert main(["restore", str(photo), "--field", str(camera), "-o", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("degtrans restore: error:") and str(no_bundle) in err and "--method wiener" in err
    assert not out.exists()


def test_train_init_starts_the_run_from_the_bundle(bundle, tmp_path, toy_data):
    run = tmp_path / "run"
    wiener = TINY.wiener
    tiny = [
        f"train.width={TINY.width}",
        f"train.wiener.features={wiener.features}",
        f"train.wiener.stages={wiener.stages}",
    ]
    # No learning: the run's weights are the ones it started from.
    sets = [*tiny, "train.init=pretrained", "train.optim.learning_rate=0", "train.max_steps_per_epoch=1"]
    args = ["train", "--local", "--data", str(toy_data), "--model", "wiener", "--epochs", "1", "-o", str(run)]
    assert main([*args, *[x for s in sets for x in ("--set", s)]]) == 0
    state = load_checkpoint(run / "last.pt")
    model = build_model(state["train_config"])
    model.load_state_dict(state["model"])
    assert_same_weights(model, bundle)


def test_train_init_with_a_missing_bundle_fails_before_the_run_starts(no_bundle, tmp_path, toy_data, capsys):
    run = tmp_path / "run"
    args = ["train", "--local", "--data", str(toy_data), "--model", "wiener", "-o", str(run)]
    assert main([*args, "--set", "train.init=pretrained"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "train.init='pretrained'" in err and str(no_bundle) in err
    assert not run.exists()
    with pytest.raises(FileNotFoundError, match=r"train.init='.*nope\.pt'.*checkpoint not found"):
        init_weights(build_model(TINY), str(tmp_path / "nope.pt"))


def test_ray_training_checks_the_init_weights_before_starting_ray(no_bundle, tmp_path, monkeypatch):
    train = pytest.importorskip("degtrans.cluster.train")

    def no_ray(_address):
        raise AssertionError("Ray was started before train.init was checked")

    monkeypatch.setattr(train, "ensure_ray", no_ray)
    config = dataclasses.replace(TINY, init="pretrained")
    with pytest.raises(FileNotFoundError, match="train.init='pretrained'"):
        train.train_distributed(tmp_path / "data", tmp_path / "run", config)
