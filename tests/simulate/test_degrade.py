"""degrade: aligned pairs, identity field, patch = crop of the full frame, reproducibility."""

from dataclasses import replace

import pytest
import torch

from degtrans.kernels import sv_conv2d
from degtrans.pairs import PARAM_COLUMNS
from degtrans.simulate.camera import CameraProfile
from degtrans.simulate.degrade import (
    DEFAULT_SETTINGS,
    context_window,
    degrade,
    sample_generator,
    sample_params,
    simulate_pair,
)
from degtrans.simulate.isp import process, unprocess
from degtrans.testing.synthetic import gaussian_field, identity_field

CAMERA = CameraProfile.bundled("sony-rx100m4")
OPTICS = replace(DEFAULT_SETTINGS, noise=False)


def _image(height=40, width=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, height // 4, width // 4, generator=g)
    return torch.nn.functional.interpolate(base, size=(height, width), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identity_field_without_noise_gives_identical_images(dtype, tolerance):
    image = _image().to(dtype)
    field = identity_field((2, 3), 5, tuple(image.shape[-2:]))
    gen = sample_generator(0, "camA/img/p00")
    params = sample_params(gen, CAMERA)
    degraded, clean = degrade(image, field, CAMERA, params, gen, replace(OPTICS, clean_cfa=True))
    # Equal up to rounding: the blur blends the (identical) tile results with weights summing to 1.
    assert torch.allclose(degraded, clean, **tolerance(dtype))
    assert degraded.shape == image.shape and 0 <= float(clean.min()) and float(clean.max()) <= 1


def test_pair_differs_only_by_optics_and_noise():
    image = _image()
    field = gaussian_field((2, 2), 7, tuple(image.shape[-2:]), sigma_centre=1.5, sigma_corner=2.5)
    gen = sample_generator(0, "x")
    params = sample_params(gen, CAMERA)
    blurred, clean = degrade(image, field, CAMERA, params, torch.Generator().manual_seed(1), OPTICS)
    noisy, clean2 = degrade(image, field, CAMERA, params, torch.Generator().manual_seed(1))
    assert torch.equal(clean, clean2)
    # Blur removes detail: less total variation than the clean image.
    tv = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean()  # noqa: E731
    assert tv(blurred) < tv(clean)
    assert not torch.equal(noisy, blurred)


def test_same_seed_and_sample_id_same_pair():
    image = _image()
    field = gaussian_field((2, 2), 7, tuple(image.shape[-2:]))
    pairs = []
    for _ in range(2):
        gen = sample_generator(3, "camB/img7/p01")
        pairs.append(degrade(image, field, CAMERA, sample_params(gen, CAMERA), gen))
    assert torch.equal(pairs[0][0], pairs[1][0]) and torch.equal(pairs[0][1], pairs[1][1])
    other = sample_generator(3, "camB/img7/p02")
    assert not torch.equal(degrade(image, field, CAMERA, sample_params(other, CAMERA), other)[0], pairs[0][0])


@pytest.mark.parametrize("y0, x0", [(0, 0), (13, 7), (28, 30)])
def test_blurred_patch_equals_crop_of_blurred_frame(y0, x0):
    frame = _image(48, 56, seed=2).double()
    field = gaussian_field((3, 4), 7, (48, 56), sigma_centre=0.7, sigma_corner=2.0)
    psfs = torch.from_numpy(field.psfs).double()
    full = sv_conv2d(frame, psfs)
    patch = (16, 20)
    top, bottom, left, right = context_window(y0, x0, patch, (48, 56), field.kernel_size)
    local = sv_conv2d(frame[..., top:bottom, left:right], psfs, offset=(top, left), frame_size=(48, 56))
    cut = local[..., y0 - top : y0 - top + patch[0], x0 - left : x0 - left + patch[1]]
    assert torch.allclose(cut, full[..., y0 : y0 + patch[0], x0 : x0 + patch[1]], atol=1e-12)


@pytest.mark.parametrize("y0, x0", [(0, 0), (9, 14), (27, 31)])
def test_degraded_patch_equals_crop_of_degraded_frame_without_noise(y0, x0):
    frame = _image(48, 56, seed=4).double()
    field = gaussian_field((3, 4), 7, (48, 56))
    gen = sample_generator(0, "p")
    params = sample_params(gen, CAMERA)
    full = simulate_pair(frame, field, CAMERA, params, gen, OPTICS)
    patch = (16, 18)
    top, bottom, left, right = context_window(y0, x0, patch, (48, 56), field.kernel_size)
    crop = (y0 - top, x0 - left, *patch)
    part = simulate_pair(
        frame[..., top:bottom, left:right],
        field,
        CAMERA,
        params,
        gen,
        OPTICS,
        offset=(top, left),
        crop=crop,
    )
    window = (..., slice(y0, y0 + patch[0]), slice(x0, x0 + patch[1]))
    assert torch.allclose(part.degraded, full.degraded[window], atol=1e-10)
    assert torch.allclose(part.clean, full.clean[window], atol=1e-10)
    assert torch.allclose(part.raw, full.raw[window], atol=1e-12)


def test_param_columns_are_the_pair_format():
    params = sample_params(sample_generator(0, "columns"), CAMERA, batch=2)
    row = params.columns(1)
    assert tuple(row) == PARAM_COLUMNS
    assert row["isp_rgb_gain"] == float(params.isp.rgb_gain[1])
    assert row["isp_rgb2cam_12"] == float(params.isp.rgb2cam[1, 1, 2])
    assert row["noise_read"] == float(params.noise.read[1])


def test_bad_input_is_reported():
    field = identity_field((1, 1), 3, (8, 8))
    gen = sample_generator(0, "a")
    with pytest.raises(ValueError, match="clean_srgb must be"):
        degrade(torch.rand(1, 1, 8, 8), field, CAMERA, sample_params(gen, CAMERA), gen)
    with pytest.raises(ValueError, match="parameters for 1"):
        degrade(torch.rand(2, 3, 8, 8), field, CAMERA, sample_params(gen, CAMERA), gen)


def test_clean_target_without_cfa_has_no_demosaicking_error():
    image = _image(32, 32, seed=5).double()
    field = identity_field((1, 1), 3, (32, 32))
    gen = sample_generator(0, "c")
    params = sample_params(gen, CAMERA)
    _, ideal = degrade(image, field, CAMERA, params, gen, replace(OPTICS, clean_cfa=False))
    _, through_cfa = degrade(image, field, CAMERA, params, gen, replace(OPTICS, clean_cfa=True))
    _, default = degrade(image, field, CAMERA, params, gen, OPTICS)
    assert torch.equal(default, ideal)  # the default label is the artefact-free one (simulate.clean_cfa)
    reference = process(unprocess(image, params.isp), params.isp)
    assert torch.allclose(ideal, reference, atol=1e-12)
    assert (through_cfa - reference).abs().max() > 1e-3


def test_pair_is_differentiable_in_the_clean_image():
    image = (0.2 + 0.4 * _image(8, 8, seed=6).double()).requires_grad_()
    field = gaussian_field((2, 2), 5, (8, 8))
    gen = sample_generator(0, "grad")
    params = sample_params(gen, CAMERA)

    def degraded(x):
        return degrade(x, field, CAMERA, params, torch.Generator().manual_seed(0))[0]

    # fast_mode: one random projection of the Jacobian instead of one forward pass per input pixel.
    assert torch.autograd.gradcheck(degraded, (image,), atol=1e-6, fast_mode=True)


@pytest.mark.gpu
def test_pair_on_cuda_matches_cpu():
    image = _image(40, 48, seed=8)
    field = gaussian_field((2, 3), 7, (40, 48))
    gen = sample_generator(0, "gpu")
    params = sample_params(gen, CAMERA)
    cpu = simulate_pair(image, field, CAMERA, params, sample_generator(0, "n"))
    gpu = simulate_pair(image.cuda(), field, CAMERA, params, sample_generator(0, "n"))
    # Same noise draws (drawn on the CPU generator); float32 kernels differ only by rounding.
    assert torch.allclose(gpu.degraded.cpu(), cpu.degraded, atol=1e-4)
    assert torch.allclose(gpu.clean.cpu(), cpu.clean, atol=1e-4)
