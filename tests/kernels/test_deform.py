"""Triton DCNv2 against its torch reference: output and every gradient (interpreter on CPU; GPU-marked)."""

import pytest
import torch
import torch.nn.functional as F

from degtrans.kernels.deform import deform_conv2d


def _inputs(batch, channels, height, width, groups, k, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    taps = k * k
    x = torch.randn(batch, channels, height, width, generator=gen)
    # Offsets up to 1.7 px: samples cross pixel and image borders (zero padding is exercised).
    offset = 1.7 * (2 * torch.rand(batch, 2 * groups * taps, height, width, generator=gen) - 1)
    mask = torch.rand(batch, groups * taps, height, width, generator=gen)
    weight = torch.randn(3, channels, k, k, generator=gen)
    bias = torch.randn(3, generator=gen)
    upstream = torch.randn(batch, 3, height, width, generator=gen)
    return [t.to(device) for t in (x, offset, mask, weight, bias, upstream)]


def _run(backend, x, offset, mask, weight, bias, upstream):
    leaves = [t.clone().requires_grad_() for t in (x, offset, mask, weight, bias)]
    out = deform_conv2d(*leaves, backend=backend)
    return (out, *torch.autograd.grad(out, leaves, upstream))


def test_triton_matches_the_reference_in_value_and_every_gradient():
    *inputs, upstream = _inputs(batch=1, channels=4, height=3, width=5, groups=2, k=3)
    names = ("output", "x", "offset", "mask", "weight", "bias")
    for name, got, want in zip(
        names, _run("triton", *inputs, upstream), _run("reference", *inputs, upstream), strict=True
    ):
        # float32 sums over taps and channels in a different order than the einsum of the reference.
        torch.testing.assert_close(got, want, atol=5e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_triton_with_zero_offsets_and_no_mask_is_a_convolution():
    x, offset, _, weight, bias, _ = _inputs(batch=1, channels=2, height=4, width=3, groups=1, k=3)
    out = deform_conv2d(x, torch.zeros_like(offset), None, weight, bias, backend="triton")
    torch.testing.assert_close(out, F.conv2d(x, weight, bias, padding=1), atol=5e-5, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(2, 16, 33, 47, 1, 3), (1, 8, 64, 64, 2, 3)])
def test_triton_matches_the_reference_on_cuda(shape):
    *inputs, upstream = _inputs(*shape, device="cuda")
    for got, want in zip(
        _run("triton", *inputs, upstream), _run("reference", *inputs, upstream), strict=True
    ):
        torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-3)  # TF32 einsums on Ampere+


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_under_autocast_matches_the_reference(dtype):
    x, offset, mask, weight, bias, upstream = _inputs(2, 8, 32, 32, 2, 3, device="cuda")
    leaves = [t.to(dtype).requires_grad_() for t in (x, offset, mask)]
    with torch.autocast("cuda", dtype=dtype):
        out = deform_conv2d(*leaves, weight, bias, backend="triton")
    grads = torch.autograd.grad(out.float(), leaves, upstream)
    assert all(g.dtype == dtype for g in grads)
    # The reference in float32 on the same rounded inputs: only the half-precision contractions differ.
    wants = _run("reference", *(t.to(dtype).float() for t in (x, offset, mask)), weight, bias, upstream)
    torch.testing.assert_close(out.float(), wants[0], atol=5e-2, rtol=2e-2)
    for got, want in zip(grads, wants[1:4], strict=True):
        torch.testing.assert_close(got.float(), want, atol=5e-2, rtol=2e-2)


def test_auto_is_the_reference_on_cpu_tensors():
    *inputs, upstream = _inputs(batch=1, channels=2, height=4, width=5, groups=1, k=3)
    assert torch.equal(deform_conv2d(*inputs), deform_conv2d(*inputs, backend="reference"))
