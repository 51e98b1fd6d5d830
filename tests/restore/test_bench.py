"""The restoration benchmarks' shared pieces (``degtrans.restore.bench``) on tiny inputs."""

import numpy as np
import pytest
import torch

from degtrans.config import ConfigError, TrainConfig
from degtrans.io import write_image
from degtrans.restore.bench import RECIPES, recipe_configs, train_for, training_frames
from degtrans.restore.checkpoint import model_from_checkpoint
from degtrans.restore.data import PairReader


def test_training_frames_cut_every_source_rotating_portraits_and_skipping_small_ones(tmp_path):
    rng = np.random.default_rng(0)
    landscape = write_image(tmp_path / "wide.png", rng.random((40, 100, 3), dtype=np.float32))
    portrait = write_image(tmp_path / "tall.png", rng.random((100, 25, 3), dtype=np.float32))
    small = write_image(tmp_path / "small.png", rng.random((10, 10, 3), dtype=np.float32))
    frames = training_frames(tmp_path / "frames", sources=[landscape, portrait, small], frame=(20, 30))
    # 40x100: 2 rows x 3 columns of 20x30; 100x25 is too narrow, turned to 25x100: 1 row; 10x10 fits no way.
    wide = [f"wide-{i}{j}.png" for i in range(2) for j in range(3)]
    assert [p.name for p in frames] == [*wide, "tall-00.png", "tall-01.png", "tall-02.png"]
    overlapping = training_frames(tmp_path / "half", overlap=0.5, sources=[landscape], frame=(20, 30))
    assert len(overlapping) == 3 * 5  # steps of 10 and 15 pixels
    from degtrans.io import read_image

    assert read_image(frames[0]).shape == (20, 30, 3)


def test_recipe_configs_apply_typed_overrides_to_every_network():
    configs = recipe_configs(RECIPES["cpu"], ["wiener", "fovkpn"], amp=False, overrides=["seed=3", "width=8"])
    assert {c.model for c in configs.values()} == {"wiener", "fovkpn"}
    batch = RECIPES["cpu"]["batch"]
    assert all(c.seed == 3 and c.width == 8 and c.batch_size == batch for c in configs.values())
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        recipe_configs(RECIPES["cpu"], ["wiener"], amp=False, overrides=["seed"])
    with pytest.raises(ConfigError, match="widht"):
        recipe_configs(RECIPES["cpu"], ["wiener"], amp=False, overrides=["widht=8"])


def test_train_for_takes_exactly_the_budget_and_scores_along_the_way(toy_data, tmp_path):
    config = TrainConfig(model="wiener", width=8, wiener_features=6, batch_size=4, learning_rate=1e-3,
                         warmup_steps=2, ema_decay=0.9, amp=False)  # fmt: skip
    reader = PairReader(toy_data, val_fraction=0.0, with_psf=True)
    assert reader.steps_per_epoch(4, "all", drop_last=True) == 4  # 16 patches: 5 steps cross an epoch
    seen = []
    result = train_for(config, reader, 5, tmp_path / "net.pt", "cpu", every=2,
                       score=lambda path: seen.append(path) or {"calls": len(seen)})  # fmt: skip
    assert [point["step"] for point in result["curve"]] == [2, 4, 5]
    assert [point["calls"] for point in result["curve"]] == [1, 2, 3]
    model, _ = model_from_checkpoint(result["checkpoint"], device=torch.device("cpu"))
    assert model.needs_psf  # the deep Wiener network it trained
    assert result["patches_per_s"] > 0
