import dataclasses
import json
import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from degtrans.config import FOVKPNConfig, OptimConfig, TrainConfig, WienerConfig
from degtrans.kernels import sv_conv2d
from degtrans.restore.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from degtrans.restore.coords import fov_coords
from degtrans.restore.data import PairReader
from degtrans.restore.loop import (
    Budget,
    Progress,
    evaluate,
    fit,
    make_optimizer,
    make_scheduler,
    train_local,
    train_run,
)
from degtrans.restore.models import MODELS, build_model
from degtrans.testing.synthetic import gaussian_field
from degtrans.testing.toydata import toy_frame, write_toy_dataset

# lr 2e-3: the undamped multi-dilation kernel head (issue 12) spikes at 5e-3 without warmup and
# reached a tenth of the loss in 400 steps at 2e-3 (8.6x in 500 steps at 5e-3).
TINY = TrainConfig(
    model="fovkpn",
    width=8,
    batch_size=4,
    val_fraction=0.6,
    fovkpn=FOVKPNConfig(offset_channels=8),
    optim=OptimConfig(learning_rate=2e-3, loss="l2"),
)


def four_patches(size: int = 16) -> dict:
    """Four patches of a smooth frame and its spatially variant blur, with their true coordinates."""
    frame_size = (2 * size, 2 * size)
    smooth = gaussian_field(
        grid=(1, 1), psf_size=7, image_size=frame_size, sigma_centre=1.0, sigma_corner=1.0
    )
    field = gaussian_field(grid=(2, 2), psf_size=7, image_size=frame_size, sigma_centre=1.0, sigma_corner=1.5)
    frame = torch.from_numpy(toy_frame(*frame_size, np.random.default_rng(0))).permute(2, 0, 1)[None]
    clean = sv_conv2d(frame, torch.from_numpy(smooth.psfs))
    blurred = sv_conv2d(clean, torch.from_numpy(field.psfs))
    origins = [(0, 0), (0, size), (size, 0), (size, size)]

    def cut(image):
        return torch.cat([image[..., y : y + size, x : x + size] for y, x in origins])

    y0, x0 = torch.tensor([o[0] for o in origins]), torch.tensor([o[1] for o in origins])
    coords = fov_coords(y0, x0, frame_size[0], frame_size[1], size, size)
    return {"degraded": cut(blurred), "clean": cut(clean), "coords": coords}


def test_tiny_fovkpn_overfits_four_patches():
    batch = four_patches()
    model = build_model(TINY)
    optimizer = make_optimizer(model, TINY.optim)
    losses = []
    chunks = []

    def end_epoch(done, stats):  # up to 50 epochs, the first where the loss fell tenfold the last
        chunks.append(stats["patches"])
        return Budget(epochs=done.epoch) if losses[-1] < losses[0] / 10 else None

    fit(model, lambda epoch: [batch] * 10, optimizer, TINY, Budget(epochs=50),
        report=lambda r: losses.append(r["loss"]), on_chunk=end_epoch)  # fmt: skip
    assert set(chunks) == {40}
    assert losses[-1] < losses[0] / 10, f"L2 loss went from {losses[0]:.4g} to {losses[-1]:.4g}"


def _step_and_params(model, optimizer, scheduler, batch):
    config = dataclasses.replace(TINY, optim=dataclasses.replace(TINY.optim, loss="l1"))
    fit(model, lambda epoch: [batch], optimizer, config, Budget(epochs=1), scheduler=scheduler)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["fovkpn", "wiener"])
def test_checkpoint_resume_reproduces_the_next_step_exactly(tmp_path, name, toy_data):
    config = TrainConfig(
        model=name,
        width=8,
        fovkpn=FOVKPNConfig(offset_channels=8),
        wiener=WienerConfig(features=6),
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=3),
    )
    reader = PairReader(toy_data, with_psf=True)
    first, second = list(reader.batches("all", 4, shuffle=False, limit=8))
    model = build_model(config)
    optimizer = make_optimizer(model, config.optim)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=10)
    _step_and_params(model, optimizer, scheduler, first)
    path = save_checkpoint(tmp_path / "last.pt", model, optimizer, scheduler, 0, config)
    expected = _step_and_params(model, optimizer, scheduler, second)

    fresh = build_model(dataclasses.replace(config, seed=123))
    fresh_optimizer = make_optimizer(fresh, config.optim)
    fresh_scheduler = make_scheduler(fresh_optimizer, config, steps_per_epoch=10)
    state = load_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler)
    assert state["epoch"] == 0 and state["train_config"] == config
    resumed = _step_and_params(fresh, fresh_optimizer, fresh_scheduler, second)
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()
    for a, b in zip(expected, resumed, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_checkpoint_for_another_model_is_a_clear_error(tmp_path):
    config = TrainConfig(model="wiener", width=8, wiener=WienerConfig(features=6))
    model = build_model(config)
    path = save_checkpoint(tmp_path / "w.pt", model, None, None, 0, config)
    with pytest.raises(ValueError, match=r"w\.pt.*'wiener'"):
        load_checkpoint(path, build_model(TINY))
    with pytest.raises(ValueError, match=r"w\.pt.*expected 'fovkpn'"):
        model_from_checkpoint(path, expect="fovkpn")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(bad)


def test_train_local_writes_the_run_and_resumes(tmp_path, toy_data):
    config = dataclasses.replace(
        TINY, epochs=1, batch_size=8, optim=dataclasses.replace(TINY.optim, loss="l1")
    )
    run = tmp_path / "run"
    summary = train_local(toy_data, run, config, progress=False)
    for name in ("last.pt", "best.pt", "metrics.jsonl", "config.json", "curves.png"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / "config.json").read_text())["model"] == "fovkpn"
    assert summary["best_epoch"] == 0 and math.isfinite(summary["best_psnr"])
    summary = train_local(toy_data, run, dataclasses.replace(config, epochs=2), progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


def test_evaluate_of_an_identity_model_is_the_input_psnr(toy_data):
    from degtrans.metrics import psnr

    model = build_model(TINY)  # untrained FOV-KPN is the identity
    batches = list(PairReader(toy_data).batches("all", 8, shuffle=False))
    result = evaluate(model, batches)
    expected = torch.cat([psnr(b["degraded"].clamp(0, 1), b["clean"]) for b in batches]).mean()
    assert result["count"] == 16
    assert result["psnr"] == pytest.approx(float(expected), abs=1e-3)


class Wrapper(nn.Module):
    """Hides the network's attributes behind ``.module``, as DDP does."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.module = net

    def forward(self, *args):
        return self.module(*args)


def test_train_run_feeds_the_psf_by_the_registry_through_a_wrapper(tmp_path, toy_data):
    """The wiener network needs the PSF; the registry says so, not an attribute the wrapper hides."""
    config = TrainConfig(model="wiener", width=8, epochs=1, batch_size=8, wiener=WienerConfig(features=6))
    reader = PairReader(toy_data, with_psf=MODELS["wiener"].needs_psf)

    def train_batches(epoch):
        return reader.batches("train", 8, epoch=epoch)

    summary = train_run(config, tmp_path / "run", train_batches, reader.count("train"), reader, wrap=Wrapper)
    assert MODELS["wiener"].needs_psf and not MODELS["fovkpn"].needs_psf
    assert summary["best_epoch"] == 0 and math.isfinite(summary["metrics"]["train_loss"])
    assert load_checkpoint(tmp_path / "run" / "last.pt", build_model(config))["epoch"] == 0


def test_validation_is_never_silently_empty(toy_data):
    """Two source images whose hashes both lie above val_fraction: one is validation anyway."""
    reader = PairReader(toy_data, val_fraction=1e-9)
    assert reader.fallback is not None and reader.count("val") == 8 and reader.count("train") == 8
    assert PairReader(toy_data, val_fraction=0.0).count("val") == 0


@pytest.mark.parametrize("val_fraction", [0.5, 0.0])
def test_without_validation_it_warns_and_best_is_the_last_epoch(tmp_path, toy_field, caplog, val_fraction):
    one_image = write_toy_dataset(tmp_path / "one", toy_field, frames=1, patches_per_frame=8, patch_size=24)
    config = dataclasses.replace(TINY, epochs=2, batch_size=8, val_fraction=val_fraction)
    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="degtrans"):
        summary = train_local(one_image, run, config, progress=False)
    assert "no validation split" in caplog.text and "best.pt will be the last epoch" in caplog.text
    assert summary["best_epoch"] == 1 and load_checkpoint(run / "best.pt")["epoch"] == 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_count"] for r in records] == [0, 0]


class Gain(nn.Module):
    """One parameter times the degraded patch, ``seconds`` per call."""

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))
        self.seconds = seconds

    def forward(self, degraded, *_):
        time.sleep(self.seconds)
        return self.gain * degraded


def _tiny_run(budget, every=None, seconds_per_step=0.0, batches_per_epoch=3):
    """``fit`` of a one-parameter network on constant batches; returns its progress and chunk ends."""
    batch = {"degraded": torch.ones(2, 3, 4, 4), "clean": torch.full((2, 3, 4, 4), 0.5)}
    model = Gain(seconds_per_step)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ends = []

    def end(progress, stats):
        ends.append((progress.epoch, progress.step))

    done = fit(model, lambda epoch: [batch] * batches_per_epoch, optimizer, TrainConfig(), budget,
               every=every, on_chunk=end)  # fmt: skip
    return done, ends


def test_fit_stops_at_the_first_limit_of_its_budget():
    done, ends = _tiny_run(Budget(epochs=2))
    assert (done.epoch, done.step) == (2, 6) and ends == [(1, 3), (2, 6)]
    done, ends = _tiny_run(Budget(epochs=5, steps=4))
    assert (done.epoch, done.step) == (1, 4) and ends == [(1, 3), (1, 4)]
    # ``every`` adds chunk ends inside an epoch; an endless epoch ends at the step budget.
    done, ends = _tiny_run(Budget(steps=5), every=lambda step: step + 2, batches_per_epoch=10**6)
    assert done.step == 5 and ends == [(0, 2), (0, 4), (0, 5)]


def test_fit_honours_a_time_budget_between_steps():
    done, ends = _tiny_run(Budget(steps=1000, seconds=0.2), seconds_per_step=0.05, batches_per_epoch=10**6)
    assert 2 <= done.step <= 6 and ends == [(0, done.step)] and done.seconds >= 0.2


def test_fit_resumes_from_its_start_and_a_chunk_end_may_change_the_budget():
    batch = {"degraded": torch.ones(1, 3, 4, 4), "clean": torch.ones(1, 3, 4, 4)}
    model = Gain()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ends = []

    def end(progress, stats):
        ends.append(progress.step)
        return Budget(steps=6)

    done = fit(model, lambda epoch: iter(lambda: batch, None), optimizer, TrainConfig(), Budget(steps=10),
               start=Progress(step=4), every=lambda step: step + 1, on_chunk=end)  # fmt: skip
    assert done.step == 6 and ends == [5, 6]


def test_build_model_leaves_the_global_rng_alone_and_is_seeded_by_the_config():
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first = build_model(TINY)
    assert torch.equal(torch.get_rng_state(), state)
    second = build_model(TINY)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
