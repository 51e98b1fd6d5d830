"""ISP chain: inverses, round trip, parameter sampling, gradients."""

import pytest
import torch

from degtrans.simulate.camera import CameraProfile
from degtrans.simulate.isp import (
    ISPParams,
    gamma_compression,
    gamma_expansion,
    inverse_smoothstep,
    process,
    sample_isp_params,
    smoothstep,
    unprocess,
)


def _params(batch=2, seed=0):
    camera = CameraProfile.bundled("canon-eos-5d-mark-ii")
    return sample_isp_params(torch.Generator().manual_seed(seed), camera=camera, batch=batch)


def _mid_range_image(batch=2, size=16, seed=1):
    # Moderate, slightly saturated colours: the highlight-safe gain inversion stays inactive.
    g = torch.Generator().manual_seed(seed)
    grey = 0.15 + 0.45 * torch.rand(batch, 1, size, size, generator=g, dtype=torch.float64)
    tint = 1.0 + 0.15 * (torch.rand(batch, 3, size, size, generator=g, dtype=torch.float64) - 0.5)
    return (grey * tint).clamp(0, 1)


def test_tone_and_gamma_are_inverses():
    x = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert torch.allclose(smoothstep(inverse_smoothstep(x)), x, atol=1e-10)
    assert torch.allclose(gamma_compression(gamma_expansion(x[1:])), x[1:], atol=1e-10)


def test_process_inverts_unprocess():
    srgb = _mid_range_image()
    params = _params()
    out = process(unprocess(srgb, params), params)
    assert (out - srgb).abs().max() < 1e-4


def test_unprocess_output_is_linear_camera_rgb_in_range():
    srgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    linear = unprocess(srgb, _params())
    assert linear.shape == srgb.shape
    assert linear.min() >= 0 and linear.max() <= 1


def test_highlights_are_not_clipped_by_gain_inversion():
    white = torch.ones(2, 3, 4, 4, dtype=torch.float64)
    linear = unprocess(white, _params())
    # safe_invert_gains blends to gain 1 at white: white stays (nearly) saturated, never dimmed.
    assert linear.min() > 0.9


def test_sampling_is_reproducible_and_per_sample():
    a, b = _params(batch=4, seed=7), _params(batch=4, seed=7)
    assert torch.equal(a.rgb_gain, b.rgb_gain) and torch.equal(a.red_gain, b.red_gain)
    assert len(set(a.red_gain.tolist())) == 4
    camera = CameraProfile.bundled("canon-eos-5d-mark-ii")
    assert torch.all((a.red_gain / camera.wb_gains[0] - 1).abs() <= 0.1 + 1e-12)


def test_vector_round_trip():
    params = _params(batch=3)
    again = ISPParams.from_vector(params.vector())
    for name in ("rgb2cam", "rgb_gain", "red_gain", "blue_gain"):
        assert torch.equal(getattr(again, name), getattr(params, name))
    assert torch.allclose(params.cam2rgb @ params.rgb2cam, torch.eye(3, dtype=torch.float64), atol=1e-10)


def test_gradcheck_process():
    params = _params(batch=1)
    x = (0.2 + 0.3 * torch.rand(1, 3, 4, 4, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: process(t, params), (x,))


def test_batch_mismatch_is_broadcast_error():
    with pytest.raises(RuntimeError):
        process(torch.rand(3, 3, 4, 4), _params(batch=2))
