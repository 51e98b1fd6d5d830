"""sv_conv2d_adjoint: the dot-product test on every backend (Triton through its interpreter), and the
vector-Jacobian product of sv_conv2d."""

from __future__ import annotations

import pytest
import torch

from degtrans.kernels import sv_conv2d, sv_conv2d_adjoint

PADDINGS = ("reflect", "zeros")


def _rand(*shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum())


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("backend", ["reference", "cpu", "fft", "triton"])
def test_adjoint_passes_the_dot_product_test(backend, padding):
    # Odd sizes, a patch of a larger frame, tiles that do not divide it: <A x, y> = <x, A^T y>.
    x, y = _rand(1, 2, 13, 11, seed=0), _rand(1, 2, 13, 11, seed=1)
    psfs = _rand(2, 3, 2, 5, 5, seed=2)
    kwargs = {"offset": (3, 6), "frame_size": (21, 25), "padding": padding, "backend": backend}
    lhs = _dot(sv_conv2d(x, psfs, **kwargs), y)
    rhs = _dot(x, sv_conv2d_adjoint(y, psfs, **kwargs))
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("padding", PADDINGS)
def test_adjoint_per_image_geometry_passes_the_dot_product_test(padding):
    x, y = _rand(3, 1, 9, 15, seed=3), _rand(3, 1, 9, 15, seed=4)
    fields = _rand(2, 2, 2, 1, 3, 3, seed=5)
    kwargs = {
        "offset": [(0, 0), (4, 1), (2, 9)], "frame_size": (17, 29), "field_index": [1, 0, 1],
        "padding": padding,
    }  # fmt: skip
    assert _dot(sv_conv2d(x, fields, **kwargs), y) == pytest.approx(
        _dot(x, sv_conv2d_adjoint(y, fields, **kwargs)), rel=1e-12
    )


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_adjoint_is_the_vector_jacobian_product(backend, padding, tolerance):
    # Taken at a random x, not at the adjoint's own x = 0: the blur is linear, so they agree.
    x = _rand(1, 2, 15, 17, seed=6).requires_grad_(True)
    y = _rand(1, 2, 15, 17, seed=7)
    psfs = _rand(3, 2, 2, 7, 7, seed=8)
    kwargs = {"padding": padding, "backend": backend}
    (vjp,) = torch.autograd.grad(sv_conv2d(x, psfs, **kwargs), x, y)
    torch.testing.assert_close(sv_conv2d_adjoint(y, psfs, **kwargs), vjp, **tolerance(torch.float64))


def test_backends_agree_on_the_adjoint(tolerance):
    y = _rand(1, 1, 23, 21, seed=9)
    psfs = _rand(3, 3, 1, 5, 5, seed=10)
    expected = sv_conv2d_adjoint(y, psfs, backend="reference")
    for backend in ("cpu", "fft", "triton"):
        torch.testing.assert_close(
            sv_conv2d_adjoint(y, psfs, backend=backend), expected, **tolerance(torch.float64)
        )


def test_adjoint_is_differentiable_in_the_image_and_the_psfs():
    y = _rand(1, 1, 7, 9, seed=11).requires_grad_(True)
    psfs = _rand(2, 2, 1, 3, 3, seed=12).requires_grad_(True)

    def fn(y, psfs):
        return sv_conv2d_adjoint(y, psfs, offset=(1, 2), frame_size=(10, 12), backend="reference")

    assert torch.autograd.gradcheck(fn, (y, psfs), fast_mode=True)


def test_adjoint_without_grad_returns_a_plain_tensor():
    psfs = _rand(1, 1, 1, 3, 3, seed=13).requires_grad_(True)
    with torch.no_grad():
        out = sv_conv2d_adjoint(_rand(1, 1, 5, 5, seed=14), psfs)
    assert not out.requires_grad


def test_adjoint_rejects_bad_input_by_its_own_name():
    with pytest.raises(ValueError, match="sv_conv2d_adjoint: .*padding"):
        sv_conv2d_adjoint(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 1, 3, 3), padding="circular")
    with pytest.raises(ValueError, match="sv_conv2d_adjoint: x must be"):
        sv_conv2d_adjoint(torch.zeros(5, 5), torch.zeros(1, 1, 1, 3, 3))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "fft"])
def test_adjoint_on_gpu_passes_the_dot_product_test(backend):
    x, y = _rand(2, 3, 130, 97, seed=15).float().cuda(), _rand(2, 3, 130, 97, seed=16).float().cuda()
    psfs = _rand(3, 4, 3, 9, 9, seed=17).float().cuda()
    kwargs = {"offset": (5, 11), "frame_size": (300, 400), "backend": backend}
    # float32 sums over ~75,000 products: relative error ~1e-6, allowed 1e-4.
    assert _dot(sv_conv2d(x, psfs, **kwargs), y) == pytest.approx(
        _dot(x, sv_conv2d_adjoint(y, psfs, **kwargs)), rel=1e-4
    )
