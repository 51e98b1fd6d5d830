"""The restoration benchmarks' shared pieces (``degtrans.restore.bench``) on tiny inputs; the frames,
the in-memory pairs and the time budget are tested through ``benchmarks/restore.py``
(``test_benchmark_restore.py``)."""

import pytest
import torch

from degtrans.config import PRESETS, ConfigError, OptimConfig, TrainConfig, WienerConfig
from degtrans.restore.bench import InMemoryPairs, preset_configs, train_for
from degtrans.restore.checkpoint import model_from_checkpoint
from degtrans.restore.data import PairReader


def test_preset_configs_apply_typed_overrides_to_every_network():
    configs = preset_configs("bench-cpu", ["wiener", "fovkpn"], amp=False, overrides=["seed=3", "width=8"])
    assert {c.model for c in configs.values()} == {"wiener", "fovkpn"}
    batch = PRESETS["bench-cpu"]["train"]["batch_size"]
    assert all(c.seed == 3 and c.width == 8 and c.batch_size == batch for c in configs.values())
    assert all(c.preset == "bench-cpu" and c.optim.warmup_steps == 100 for c in configs.values())
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        preset_configs("bench-cpu", ["wiener"], amp=False, overrides=["seed"])
    with pytest.raises(ConfigError, match="widht"):
        preset_configs("bench-cpu", ["wiener"], amp=False, overrides=["widht=8"])
    with pytest.raises(ConfigError, match="preset"):
        preset_configs("cpu", ["wiener"], amp=False)


def test_train_for_takes_exactly_the_budget_and_scores_along_the_way(toy_data, tmp_path):
    config = TrainConfig(model="wiener", width=8, batch_size=4, amp=False, wiener=WienerConfig(features=6),
                         optim=OptimConfig(learning_rate=1e-3, warmup_steps=2, ema_decay=0.9))  # fmt: skip
    pairs = InMemoryPairs(PairReader(toy_data, val_fraction=0.0, with_psf=True))
    scored = []
    result = train_for(config, pairs, 5, tmp_path / "net.pt", "cpu", every=2,
                       score=lambda path: scored.append(path) or {"psnr": float(len(scored))})  # fmt: skip
    assert [point["step"] for point in result["curve"]] == [2, 4, 5]  # 16 pairs: step 5 is in epoch 2
    assert [point["psnr"] for point in result["curve"]] == [1.0, 2.0, 3.0]
    assert result["steps"] == 5 and result["patches_per_s"] > 0
    model, _ = model_from_checkpoint(result["checkpoint"], device=torch.device("cpu"))
    assert model.needs_psf  # the deep Wiener network it trained
