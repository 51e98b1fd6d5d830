"""apply_pixel_kernels: the reference against first principles, then the CPU path and Triton against it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from degtrans.kernels import apply_pixel_kernels
from degtrans.kernels.pixel_kernels.reference import apply_pixel_kernels_reference

PADDINGS = ("zeros", "reflect")
LAYOUTS = ("shared", "per_channel")


def _rand(*shape, dtype=torch.float64, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _kernels(layout, b, c, k, h, w, dtype=torch.float64, seed=1):
    shape = (b, k * k, h, w) if layout == "shared" else (b, c, k * k, h, w)
    kernels = _rand(*shape, dtype=dtype, seed=seed)
    return kernels / kernels.sum(dim=-3, keepdim=True)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_constant_kernels_equal_correlation(padding, backend, tolerance):
    k = 5
    kernel = _rand(3, k, k)
    x = _rand(2, 3, 11, 13, seed=2)
    kernels = kernel.reshape(1, 3, k * k, 1, 1).expand(2, 3, k * k, 11, 13)
    mode = "reflect" if padding == "reflect" else "constant"
    expected = F.conv2d(F.pad(x, (2, 2, 2, 2), mode=mode), kernel.unsqueeze(1), groups=3)
    out = apply_pixel_kernels(x, kernels, padding=padding, backend=backend)
    torch.testing.assert_close(out, expected, **tolerance(torch.float64))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_delta_kernel_shifts_the_image(backend):
    k, h, w = 3, 6, 7
    x = _rand(1, 2, h, w)
    kernels = torch.zeros(1, k * k, h, w, dtype=torch.float64)
    kernels[:, 1 * k + 2] = 1.0  # tap u = (1, 2): y(p) = x(p + (0, 1))
    out = apply_pixel_kernels(x, kernels, backend=backend)
    assert torch.equal(out[..., :-1], x[..., 1:])
    assert torch.equal(out[..., -1], torch.zeros_like(out[..., -1]))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_adjoint_matches_first_principles_scatter(layout, tolerance):
    """<A x, y> = <x, A^T y>, with A^T y(q) = sum_u K_{q-u+c}(u) y(q-u+c) (zero padding)."""
    b, c, h, w, k = 1, 2, 6, 5, 3
    x = _rand(b, c, h, w, seed=3).requires_grad_(True)
    y = _rand(b, c, h, w, seed=4)
    kernels = _kernels(layout, b, c, k, h, w)
    (grad,) = torch.autograd.grad(apply_pixel_kernels(x, kernels, backend="reference"), x, y)
    lhs = float((apply_pixel_kernels(x.detach(), kernels, backend="reference") * y).sum())
    assert lhs == pytest.approx(float((x.detach() * grad).sum()), rel=1e-12)
    per_channel = kernels if layout == "per_channel" else kernels.unsqueeze(1).expand(b, c, k * k, h, w)
    expected = torch.zeros(b, c, h + 2, w + 2, dtype=torch.float64)
    for py in range(h):
        for px in range(w):
            taps = per_channel[0, :, :, py, px].reshape(c, k, k)
            expected[0, :, py : py + k, px : px + k] += y[0, :, py, px, None, None] * taps
    torch.testing.assert_close(grad, expected[..., 1:-1, 1:-1], **tolerance(torch.float64))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("padding", PADDINGS)
def test_gradcheck(backend, layout, padding):
    x = _rand(1, 2, 5, 6).requires_grad_(True)
    kernels = _kernels(layout, 1, 2, 3, 5, 6).requires_grad_(True)

    def fn(x, kernels):
        return apply_pixel_kernels(x, kernels, padding=padding, backend=backend)

    assert torch.autograd.gradcheck(fn, (x, kernels), fast_mode=True)


@pytest.mark.parametrize(
    ("x_shape", "k_shape", "kwargs", "match"),
    [
        ((2, 8, 8), (1, 9, 8, 8), {}, "x must be"),
        ((1, 2, 8, 8), (1, 9, 8), {}, "kernels must be"),
        ((1, 2, 8, 8), (1, 4, 8, 8), {}, "odd k"),
        ((1, 2, 8, 8), (1, 8, 8, 8), {}, "odd k"),
        ((1, 2, 8, 8), (1, 9, 8, 7), {}, "do not match"),
        ((1, 2, 8, 8), (1, 3, 9, 8, 8), {}, "do not match"),
        ((1, 2, 8, 8), (1, 9, 8, 8), {"padding": "circular"}, "padding"),
        ((1, 2, 8, 8), (1, 9, 8, 8), {"backend": "gpu"}, "backend"),
    ],
)
def test_bad_input_is_rejected(x_shape, k_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        apply_pixel_kernels(torch.rand(x_shape), torch.rand(k_shape), **kwargs)


def _compare_with_reference(fn, x, kernels, tolerance, padding, **kwargs):
    """Output and both gradients (same upstream gradient) of ``fn`` against the float64 reference."""
    upstream = _rand(*x.shape, seed=9).to(x.device)
    results = []
    for impl, dtype in ((apply_pixel_kernels_reference, torch.float64), (fn, x.dtype)):
        xi = x.detach().to(dtype).requires_grad_(True)
        ki = kernels.detach().to(dtype).requires_grad_(True)
        out = impl(xi, ki, padding=padding, **kwargs)
        results.append(
            [t.to(x.dtype) for t in (out, *torch.autograd.grad(out, (xi, ki), upstream.to(dtype)))]
        )
    tol = tolerance(x.dtype)
    for name, got, want in zip(("output", "grad x", "grad kernels"), results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, **tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize(("h", "w", "k"), [(19, 23, 5), (7, 6, 3), (13, 9, 7)])
def test_cpu_path_matches_reference(h, w, k, padding, layout, dtype, tolerance):
    from degtrans.kernels.pixel_kernels.cpu import apply_pixel_kernels_cpu

    x = _rand(2, 3, h, w, dtype=dtype)
    kernels = _kernels(layout, 2, 3, k, h, w, dtype=dtype)
    _compare_with_reference(apply_pixel_kernels_cpu, x, kernels, tolerance, padding)


@pytest.mark.parametrize(
    ("layout", "padding", "dtype"),
    [
        ("shared", "zeros", torch.float64),
        ("shared", "reflect", torch.float32),
        ("per_channel", "zeros", torch.float32),
        ("per_channel", "reflect", torch.float64),
    ],
)
def test_triton_matches_reference(layout, padding, dtype, tolerance):
    from degtrans.kernels.pixel_kernels.autograd import apply_pixel_kernels_triton

    x = _rand(1, 2, 19, 23, dtype=dtype)
    kernels = _kernels(layout, 1, 2, 5, 19, 23, dtype=dtype)
    _compare_with_reference(apply_pixel_kernels_triton, x, kernels, tolerance, padding)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
def test_triton_large_on_gpu(layout, tolerance):
    x = _rand(2, 3, 257, 383, dtype=torch.float32).cuda()
    kernels = _kernels(layout, 2, 3, 7, 257, 383, dtype=torch.float32).cuda()

    def fn(a, b, padding):
        return apply_pixel_kernels(a, b, padding=padding, backend="triton")

    _compare_with_reference(fn, x, kernels, tolerance, "reflect")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_precision_on_gpu(dtype, tolerance):
    x = _rand(1, 3, 96, 80, dtype=torch.float32).cuda()
    kernels = _kernels("shared", 1, 3, 5, 96, 80, dtype=torch.float32).cuda()
    # The reference sees the same rounded inputs, in float64; only the kernel's arithmetic differs.
    want = apply_pixel_kernels_reference(x.to(dtype).double(), kernels.to(dtype).double()).float()
    got = apply_pixel_kernels(x.to(dtype), kernels.to(dtype), backend="triton")
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, **tolerance(dtype))


# --- dilation -------------------------------------------------------------------------------------------


def _dilated_definition(x, kernels, dilation, padding):
    """``y(p) = sum_u K_p(u) x(p + d (u - c))`` tap by tap on an explicitly padded image."""
    k = int(round(kernels.shape[-3] ** 0.5))
    halo = (k // 2) * dilation
    xp = F.pad(x, (halo,) * 4, mode={"reflect": "reflect", "zeros": "constant"}[padding])
    height, width = x.shape[-2:]
    per_channel = kernels if kernels.dim() == 5 else kernels.unsqueeze(1)
    out = torch.zeros_like(x)
    for i in range(k):
        for j in range(k):
            window = xp[..., i * dilation : i * dilation + height, j * dilation : j * dilation + width]
            out = out + per_channel[:, :, i * k + j] * window
    return out


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("dilation", [2, 3, 4])
def test_dilated_kernels_match_the_definition(dilation, padding, backend, tolerance):
    x = _rand(2, 3, 13, 17, seed=dilation)
    kernels = _kernels("per_channel", 2, 3, 5, 13, 17, seed=dilation + 1)
    out = apply_pixel_kernels(x, kernels, dilation=dilation, padding=padding, backend=backend)
    torch.testing.assert_close(
        out, _dilated_definition(x, kernels, dilation, padding), **tolerance(torch.float64)
    )


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_dilated_gradcheck(backend):
    x = _rand(1, 2, 7, 6).requires_grad_(True)
    kernels = _kernels("shared", 1, 2, 3, 7, 6).requires_grad_(True)

    def fn(x, kernels):
        return apply_pixel_kernels(x, kernels, dilation=2, padding="reflect", backend=backend)

    assert torch.autograd.gradcheck(fn, (x, kernels), fast_mode=True)


@pytest.mark.parametrize(
    ("layout", "padding", "dilation"), [("per_channel", "reflect", 2), ("shared", "zeros", 3)]
)
def test_triton_dilated_matches_reference(layout, padding, dilation, tolerance):
    from degtrans.kernels.pixel_kernels.autograd import apply_pixel_kernels_triton

    x = _rand(1, 2, 17, 21)
    kernels = _kernels(layout, 1, 2, 3, 17, 21)
    _compare_with_reference(apply_pixel_kernels_triton, x, kernels, tolerance, padding, dilation=dilation)


def test_triton_reads_a_slice_of_several_dilations_and_kernels_of_another_dtype(tolerance):
    """As FOV-KPN's head calls it: float32 image, kernels of another dtype, one dilation's slice in place."""
    x = _rand(2, 2, 11, 13, dtype=torch.float32).requires_grad_(True)
    every = _rand(2, 3, 2, 9, 11, 13, dtype=torch.float64, seed=4).requires_grad_(
        True
    )  # (B, D, C, k*k, H, W)
    upstream = _rand(2, 2, 11, 13, dtype=torch.float32, seed=5)
    got = apply_pixel_kernels(x, every.unbind(1)[1], dilation=2, padding="reflect", backend="triton")
    assert got.dtype == torch.float32
    grads = torch.autograd.grad(got, (x, every), upstream)
    assert grads[1].dtype == torch.float64 and float(grads[1][:, (0, 2)].abs().sum()) == 0.0
    x64, k64 = x.detach().double().requires_grad_(True), every.detach().requires_grad_(True)
    want = apply_pixel_kernels_reference(x64, k64.unbind(1)[1], padding="reflect", dilation=2)
    want_grads = torch.autograd.grad(want, (x64, k64), upstream.double())
    torch.testing.assert_close(got.double(), want, **tolerance(torch.float32))
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g.double(), w, **tolerance(torch.float32))


@pytest.mark.gpu
def test_triton_bf16_kernels_on_float32_images_on_gpu(tolerance):
    x = _rand(2, 3, 128, 96, dtype=torch.float32).cuda()
    kernels = _kernels("per_channel", 2, 3, 5, 128, 96, dtype=torch.float32).cuda().bfloat16()
    got = apply_pixel_kernels(x, kernels, dilation=3, padding="reflect")
    want = apply_pixel_kernels_reference(x.double(), kernels.double(), padding="reflect", dilation=3)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, **tolerance(torch.float32))


def test_bad_dilation_is_rejected():
    with pytest.raises(ValueError, match="dilation"):
        apply_pixel_kernels(torch.rand(1, 1, 8, 8), torch.rand(1, 9, 8, 8), dilation=0)


def test_module_equals_function():
    from degtrans.kernels import PixelKernels

    x = _rand(1, 3, 9, 8)
    kernels = _kernels("per_channel", 1, 3, 3, 9, 8)
    module = PixelKernels(padding="reflect")
    assert torch.equal(module(x, kernels), apply_pixel_kernels(x, kernels, padding="reflect"))
