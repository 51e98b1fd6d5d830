"""The bundled weights' recipe (``degtrans.restore.pretrain``): its presets, and a run that stops at its
time limit and resumes on the same batches."""

import dataclasses
import json
import time

import pytest
import torch

from degtrans.config import OptimConfig, TrainConfig, WienerConfig, preset_config
from degtrans.errors import InputError
from degtrans.restore import loop
from degtrans.restore.pretrain import STEPS, Schedule, pretrain, train

TINY = TrainConfig(
    model="wiener",
    width=4,
    batch_size=4,
    val_fraction=0.0,
    amp=False,
    wiener=WienerConfig(features=6),
    optim=OptimConfig(learning_rate=1e-3, warmup_steps=1, ema_decay=0.9),
)


def test_each_pretrain_preset_has_its_steps_and_trains_deep_wiener_on_every_pair():
    for name in STEPS:
        config = preset_config(name).train
        assert config.model == "wiener" and config.val_fraction == 0.0 and config.optim.ema_decay > 0
    with pytest.raises(InputError, match="pretrain preset"):
        pretrain(None, "bench-cpu")


def test_a_time_limit_stops_between_steps_and_a_rerun_resumes_on_the_same_batches(
    tmp_path, toy_data, monkeypatch
):
    whole = Schedule(steps=5, save_every=4, snapshot_every=0, side_info_dropout=0.5)
    expected, info = train(tmp_path / "whole", toy_data, TINY, whole, "cpu")
    assert info["steps"] == 5
    forward = loop.forward_batch

    def slow(*args):  # 0.5 s a step: a limit of 0.75 s ends the run after its second step
        time.sleep(0.5)
        return forward(*args)

    monkeypatch.setattr(loop, "forward_batch", slow)
    _, info = train(tmp_path / "parts", toy_data, TINY, dataclasses.replace(whole, time_limit=0.75), "cpu")
    assert info["steps"] == 2  # checked after every step, not every save_every steps
    monkeypatch.setattr(loop, "forward_batch", forward)
    resumed, info = train(tmp_path / "parts", toy_data, TINY, whole, "cpu")
    assert info["steps"] == 5
    log = (tmp_path / "parts" / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [2, 5]
    for a, b in zip(expected.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    with pytest.raises(InputError, match="another preset or --steps"):
        train(tmp_path / "parts", toy_data, TINY, Schedule(steps=6), "cpu")
