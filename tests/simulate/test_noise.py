"""Shot + read noise: variance model and parameter sampling."""

import math

import pytest
import torch

from degtrans.simulate.noise import (
    NoiseModel,
    NoiseParams,
    add_standard_noise,
    estimate_noise_variance,
    noise_variance,
    sample_noise_params,
    standard_noise,
)


def add_noise(x: torch.Tensor, params: NoiseParams, generator: torch.Generator) -> torch.Tensor:
    return add_standard_noise(x, params, standard_noise(x.shape, generator, x.dtype))


def test_noise_variance_matches_model():
    levels = torch.tensor([0.05, 0.2, 0.5, 0.9], dtype=torch.float64)
    x = levels[None, :, None, None].expand(1, 4, 200, 200).clone()
    params = NoiseParams(
        shot=torch.tensor([0.01], dtype=torch.float64), read=torch.tensor([4e-4], dtype=torch.float64)
    )
    noisy = add_noise(x, params, torch.Generator().manual_seed(0))
    residual = noisy - x
    expected = 0.01 * levels + 4e-4
    measured = residual.var(dim=(0, 2, 3))
    # 40000 samples per level: the sample variance has relative std sqrt(2/n) ~ 0.7 %; allow 4 sigma.
    assert torch.all((measured / expected - 1).abs() < 4 * math.sqrt(2 / 40000))
    assert residual.mean(dim=(0, 2, 3)).abs().max() < 4 * expected.max().sqrt() / 200
    assert torch.allclose(noise_variance(x, params)[0, :, 0, 0], expected)


def test_sampled_noise_follows_log_linear_relation():
    model = NoiseModel()
    params = sample_noise_params(torch.Generator().manual_seed(1), model, batch=4000)
    log_shot, log_read = params.shot.log(), params.read.log()
    assert params.shot.min() >= model.shot_min and params.shot.max() <= model.shot_max
    slope = torch.cov(torch.stack([log_shot, log_read]))[0, 1] / log_shot.var()
    assert abs(float(slope) - model.read_slope) < 0.05
    residual = log_read - model.read_slope * log_shot - model.read_intercept
    assert abs(float(residual.std()) - model.read_sigma) < 0.02


def test_same_generator_same_noise():
    x = torch.full((1, 1, 8, 8), 0.5)
    params = NoiseParams(torch.tensor([0.01]), torch.tensor([1e-4]))
    a = add_noise(x, params, torch.Generator().manual_seed(5))
    b = add_noise(x, params, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_noise_estimate_follows_the_true_level_per_leading_index():
    gen = torch.Generator().manual_seed(0)
    flat = torch.full((3, 64, 64), 0.4, dtype=torch.float64)
    for sigma in (0.01, 0.05):
        noisy = flat + sigma * torch.randn(flat.shape, generator=gen, dtype=torch.float64)
        # White noise: the Haar estimate is the variance itself, one per channel here.
        expected = torch.full((3,), sigma**2, dtype=torch.float64)
        torch.testing.assert_close(estimate_noise_variance(noisy), expected, rtol=0.2, atol=0)


def test_noise_estimate_pools_all_but_the_first_dimension():
    gen = torch.Generator().manual_seed(0)
    flat = 0.4 + 0.02 * torch.randn(2, 3, 64, 64, generator=gen)
    estimate = estimate_noise_variance(flat)
    assert estimate.shape == (2,) and float(estimate[0]) == pytest.approx(0.02**2, rel=0.1)
    params = NoiseParams(shot=torch.tensor([0.01]), read=torch.tensor([0.001]))
    variance = noise_variance(torch.full((1, 1, 2, 2), 0.5), params)
    torch.testing.assert_close(variance, torch.full((1, 1, 2, 2), 0.006))
