"""Noise-aware classical baselines: tuned by the noise level, never worse than the input."""

import numpy as np
import pytest
import torch

from degtrans.config import RestoreConfig, SimulateConfig
from degtrans.metrics import psnr
from degtrans.restore.baselines import (
    SensorNoise,
    baseline_settings,
    deconvolve_field,
    richardson_lucy,
    wiener_filter,
)
from degtrans.restore.evaluate import simulate_frame, tune_baselines
from degtrans.simulate.camera import load_profile
from degtrans.testing.synthetic import gaussian_field
from degtrans.testing.toydata import toy_frame

FRAME = (64, 96)


@pytest.fixture(scope="module")
def noisy_frames():
    """Toy frames through the full camera chain (ISP, CFA, demosaicking), blur + noise of several levels."""
    field = gaussian_field(grid=(2, 3), psf_size=9, image_size=FRAME, sigma_centre=1.0, sigma_corner=2.0)
    profile = load_profile("canon-eos-5d-mark-ii")
    rng = np.random.default_rng(3)
    frames = []
    for i, (low, high) in enumerate([(-4.0, -3.5), (-3.0, -2.5), (-2.3, -1.92), (-4.0, -1.92)]):
        config = SimulateConfig(clean_cfa=False, log_shot_noise_min=low, log_shot_noise_max=high, seed=i)
        frames.append(simulate_frame(toy_frame(*FRAME, rng), f"f{i}", "cam", field, profile, config))
    return field, frames


@pytest.mark.parametrize("known_noise", [True, False])
def test_wiener_is_never_below_the_input_on_noisy_frames(noisy_frames, known_noise):
    field, frames = noisy_frames
    for frame in frames:
        noise = frame.noise if known_noise else None
        isp = frame.isp if known_noise else None
        restored = deconvolve_field(frame.degraded, field, "wiener", noise=noise, isp=isp)
        before = float(psnr(frame.degraded[None], frame.clean[None])[0])
        after = float(psnr(restored[None], frame.clean[None])[0])
        assert after >= before, f"{frame.name} (shot {frame.noise.shot:.2g}): {after:.2f} < {before:.2f} dB"


def test_rl_with_the_noise_stopping_rule_is_never_below_the_input(noisy_frames):
    field, frames = noisy_frames
    for frame in frames:
        restored = deconvolve_field(frame.degraded, field, "rl", noise=frame.noise, isp=frame.isp)
        before = float(psnr(frame.degraded[None], frame.clean[None])[0])
        assert float(psnr(restored[None], frame.clean[None])[0]) >= before - 0.05, frame.name


def test_rl_acts_even_when_the_input_is_already_within_the_noise():
    """The demo's case: the observation's own residual is below the stop, yet RL must make a step."""
    gen = torch.Generator().manual_seed(1)
    psf = torch.from_numpy(gaussian_field((1, 1), 7, (40, 40), 1.0, 1.0).psfs[0, 0]).float()
    sharp = torch.rand(1, 3, 46, 46, generator=gen)
    image = torch.nn.functional.conv2d(sharp, psf[:, None], groups=3)[0]
    loose = torch.full((3,), 1.0)  # any residual is "within the noise"
    torch.testing.assert_close(richardson_lucy(image, psf, 10, loose, min_iterations=0), image)
    stepped = richardson_lucy(image, psf, 10, loose, min_iterations=1)
    assert float((stepped - image).abs().max()) > 1e-3
    config = RestoreConfig(rl_min_iterations=1)
    assert baseline_settings(config)["min_iterations"] == 1


def test_more_noise_means_a_stronger_prior():
    """The discrepancy principle: a noisier observation gets a smoother (lower-energy) restoration."""
    gen = torch.Generator().manual_seed(0)
    psf = torch.from_numpy(gaussian_field((1, 1), 7, (40, 40), 1.5, 1.5).psfs[0, 0]).double()
    sharp = torch.rand(1, 3, 46, 46, generator=gen, dtype=torch.float64)
    image = torch.nn.functional.conv2d(sharp, psf[:, None], groups=3)[0]
    quiet = wiener_filter(image, psf, torch.full((3,), 1e-6))
    loud = wiener_filter(image, psf, torch.full((3,), 1e-3))
    assert float(loud.var()) < float(quiet.var())


def test_sensor_noise_needs_the_isp():
    field = gaussian_field((1, 1), 5, (16, 16), 1.0, 1.0)
    with pytest.raises(ValueError, match="isp"):
        deconvolve_field(torch.rand(3, 16, 16), field, "wiener", noise=SensorNoise(1e-3, 1e-6))


def test_tuning_picks_the_best_grid_point_on_the_tuning_frames(noisy_frames):
    field, frames = noisy_frames
    # A residual of 1e-6 noise variances asks for an almost inverse filter: only the floor can stop it.
    grid = {"discrepancy": (1e-6,), "wiener_min_lambda": (1e-4, 0.1)}
    rl_grid = {"rl_discrepancy": (4.0,)}
    tuned, trials = tune_baselines(frames[2:], {"cam": field}, RestoreConfig(), grid, rl_grid)
    wiener = {t["wiener_min_lambda"]: t["psnr"] for t in trials if t["method"] == "wiener"}
    assert set(wiener) == {1e-4, 0.1} and [t["method"] for t in trials].count("rl") == 1
    # The inverse filter amplifies the noise: the floor must win, and the config carries it.
    assert wiener[0.1] > wiener[1e-4] + 1.0, wiener
    assert tuned.wiener_min_lambda == 0.1 and tuned.discrepancy == 1e-6 and tuned.rl_discrepancy == 4.0
    frame = frames[2]
    restored = deconvolve_field(frame.degraded, field, "wiener", noise=frame.noise, isp=frame.isp,
                                **baseline_settings(tuned))  # fmt: skip
    direct = float(psnr(restored[None].clamp(0, 1), frame.clean[None])[0])
    assert direct > float(psnr(frame.degraded[None], frame.clean[None])[0])
    # rl_grid=None leaves RL untuned: no RL trial, and the config keeps its RL setting.
    again, wiener_only = tune_baselines(
        frames[2:3], {"cam": field}, tuned, {"wiener_min_lambda": (0.1,)}, None
    )
    assert [t["method"] for t in wiener_only] == ["wiener"] and again.rl_discrepancy == 4.0
