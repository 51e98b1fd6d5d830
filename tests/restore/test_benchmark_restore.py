"""benchmarks/restore.py's pieces: training frames, uniform batches, a time budget, seeds combined."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import degtrans.restore.bench as shared
from degtrans.config import OptimConfig, TrainConfig, WienerConfig
from degtrans.io import read_image
from degtrans.restore.data import PairReader

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "restore.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("restore_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["restore_benchmark"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("restore_benchmark", None)


def test_frames_at_each_scale_and_mirrored(bench, tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((600, 900, 3)).astype(np.float32)
    frames = dict(shared.source_frames(image, ["1", "0.5", "fit"], overlap=0.0))
    # 600x900 holds 2x2 frames of 256x384, its half (300x450) one, and the whole scene one more.
    assert sorted(frames) == ["fit", "s0.5-0_0", "s1-0_0", "s1-0_1", "s1-1_0", "s1-1_1"]
    assert all(f.shape == (256, 384, 3) for f in frames.values())
    np.testing.assert_array_equal(frames["s1-1_1"], image[256:512, 384:768])
    portrait = dict(shared.source_frames(image.transpose(1, 0, 2), ["1"], overlap=0.0))
    assert len(portrait) == 4  # turned to landscape first
    source = tmp_path / "photo.png"
    from degtrans.io import write_image

    write_image(source, image)
    paths = bench.training_frames(tmp_path / "frames", [source], ["1"], flips=True)
    names = sorted(p.name for p in paths)
    assert len(names) == 8 and "photo-m-s1-0_0.png" in names and "photo-s1-0_0.png" in names
    mirrored = read_image(tmp_path / "frames" / "photo-m-s1-0_0.png")
    np.testing.assert_allclose(mirrored, read_image(source)[:256, ::-1][:, :384], atol=1e-6)


@pytest.mark.parametrize("decoded", [False, True])
def test_in_memory_pairs_visit_every_pair_once_an_epoch(bench, toy_data, decoded):
    reader = PairReader(toy_data, val_fraction=0.0, with_psf=True)
    pairs = bench.InMemoryPairs(reader, "cpu", decoded=decoded)
    assert len(pairs) == 16
    stream = pairs.stream(4, seed=3)
    epoch = [next(stream) for _ in range(4)]
    degraded = torch.cat([b["degraded"] for b in epoch])
    everything = torch.cat([b["degraded"] for b in reader.batches("all", 16, shuffle=False)])
    # The four batches are a permutation of the 16 pairs: each matches exactly one stored pair.
    matches = (degraded[:, None] == everything[None]).flatten(2).all(-1)
    assert matches.sum(1).tolist() == [1] * 16 and matches.sum(0).tolist() == [1] * 16
    assert {"psf_corners", "coords", "noise", "clean"} <= set(epoch[0])
    again = bench.InMemoryPairs(reader, "cpu", decoded=not decoded).stream(4, seed=3)
    torch.testing.assert_close(next(again)["degraded"], epoch[0]["degraded"])  # same order either way


def test_a_time_budget_stops_early_and_still_ends_the_schedule(bench, toy_data, tmp_path):
    config = TrainConfig(
        model="wiener",
        width=4,
        batch_size=4,
        wiener=WienerConfig(features=6),
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=0, ema_decay=0.9),
    )
    pairs = bench.InMemoryPairs(PairReader(toy_data, val_fraction=0.0, with_psf=True))
    result = bench.train_for(config, pairs, 100_000, tmp_path / "w.pt", "cpu", time_budget=0.5)
    assert 20 < result["steps"] < 100_000 and Path(result["checkpoint"]).is_file()
    # The cosine was sized to the budget: the last step's learning rate is its floor (1 %).
    assert result["lr"] == pytest.approx(0.01 * config.optim.learning_rate, rel=0.05)


def test_combine_reports_the_mean_and_spread_of_seeds(bench, tmp_path, capsys):
    def run(path, wiener, net):
        rows = [
            {"method": m, "zone": "all", "frames": {"cam/a": [v, 0.5], "cam/b": [v + 2, 0.5]}}
            for m, v in (("identity", 20.0), ("wiener", wiener), ("deep-wiener", net))
        ]
        path.write_text(json.dumps({"rows": rows}))
        return path

    runs = [run(tmp_path / "s0.json", 23.0, 25.5), run(tmp_path / "s1.json", 23.0, 24.9)]
    result = bench.combine(runs, tmp_path / "both.json")
    assert result["mean"]["deep-wiener"] == pytest.approx(26.2) and result["spread"][
        "deep-wiener"
    ] == pytest.approx(0.6)
    assert result["frames"]["deep-wiener"]["a"] == pytest.approx(25.2)
    assert "deep-wiener - tuned wiener: +2.20 dB (bar +2.0: met)" in capsys.readouterr().out
