"""sv_conv2d: the reference against first principles, then the CPU path and Triton against the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from degtrans.field import PSFField
from degtrans.kernels import sv_conv2d
from degtrans.kernels.sv_conv.cpu import sv_conv2d_cpu
from degtrans.kernels.sv_conv.reference import sv_conv2d_reference
from degtrans.kernels.weights import tile_weights_1d
from degtrans.testing.synthetic import gaussian_field

PADDINGS = ("reflect", "zeros")


def _field(rows, cols, channels, k, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(rows, cols, channels, k, k, generator=g, dtype=dtype)


def _image(b, c, h, w, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g, dtype=dtype)


def _per_pixel_psfs(psfs: torch.Tensor, frame: tuple[int, int]) -> torch.Tensor:
    """(H, W, C, k, k): the interpolated PSF of every sensor pixel, ``sum_t w_t(q) h_t``."""
    wy = tile_weights_1d(torch.arange(frame[0]), psfs.shape[0], frame[0], psfs.dtype)
    wx = tile_weights_1d(torch.arange(frame[1]), psfs.shape[1], frame[1], psfs.dtype)
    return torch.einsum("ry,cx,rcnij->yxnij", wy, wx, psfs)


def _scatter_zeros(x: torch.Tensor, psfs: torch.Tensor) -> torch.Tensor:
    """First principles, zero padding: every pixel q adds x(q) * h_q around itself."""
    b, c, h, w = x.shape
    k = psfs.shape[-1]
    half = k // 2
    per_pixel = _per_pixel_psfs(psfs, (h, w))
    out = torch.zeros(b, c, h + 2 * half, w + 2 * half, dtype=x.dtype)
    for qy in range(h):
        for qx in range(w):
            out[:, :, qy : qy + k, qx : qx + k] += x[:, :, qy, qx, None, None] * per_pixel[qy, qx]
    return out[:, :, half : half + h, half : half + w]


# --- reference against first principles -------------------------------------------------------------


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("backend", ["reference", "cpu", "fft"])
def test_constant_field_equals_conv2d(padding, backend, tolerance):
    k = 5
    psf = _field(1, 1, 3, k)[0, 0]
    psfs = psf.expand(2, 3, 3, k, k).contiguous()
    x = _image(2, 3, 19, 23)
    expected = F.conv2d(
        F.pad(x, (k // 2,) * 4, mode="reflect" if padding == "reflect" else "constant"),
        psf.flip(-1, -2).unsqueeze(1),
        groups=3,
    )
    out = sv_conv2d(x, psfs, padding=padding, backend=backend)
    torch.testing.assert_close(out, expected, **tolerance(torch.float64))


@pytest.mark.parametrize("backend", ["reference", "cpu", "fft"])
def test_zero_padding_equals_scatter_definition(backend, tolerance):
    x = _image(1, 2, 11, 13)
    psfs = _field(3, 2, 2, 5)
    out = sv_conv2d(x, psfs, padding="zeros", backend=backend)
    torch.testing.assert_close(out, _scatter_zeros(x, psfs), **tolerance(torch.float64))


@pytest.mark.parametrize("padding", PADDINGS)
def test_point_source_reproduces_interpolated_psf(padding, tolerance):
    field = gaussian_field(grid=(3, 4), psf_size=7, image_size=(29, 31))
    psfs = torch.from_numpy(field.psfs).double()
    for qy, qx in [(9, 8), (14, 15), (20, 22), (6, 24)]:  # >= 2 halos from the border
        x = torch.zeros(1, 3, 29, 31, dtype=torch.float64)
        x[0, :, qy, qx] = 1.0
        out = sv_conv2d(x, psfs, padding=padding, backend="reference")
        expected = torch.from_numpy(field.at(qy + 0.5, qx + 0.5).astype(np.float64))
        window = out[0, :, qy - 3 : qy + 4, qx - 3 : qx + 4]
        # PSFField.at interpolates in float64 but returns float32.
        torch.testing.assert_close(window, expected, **tolerance(torch.float32))
        assert float(out.sum()) == pytest.approx(float(expected.sum()), rel=1e-6)


@pytest.mark.parametrize("backend", ["reference", "cpu", "fft"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_patch_with_offset_equals_crop_of_frame(backend, padding, tolerance):
    frame = (40, 37)
    k, half = 5, 2
    psfs = _field(3, 4, 3, k)
    x = _image(1, 3, *frame)
    full = sv_conv2d(x, psfs, padding=padding, backend=backend)
    y0, x0, h, w = 11, 7, 19, 23
    cut = x[..., y0 : y0 + h, x0 : x0 + w]
    patch = sv_conv2d(cut, psfs, offset=(y0, x0), frame_size=frame, padding=padding, backend=backend)
    # Away from the patch border the padding cannot matter.
    inner = (slice(None), slice(None), slice(2 * half, h - 2 * half), slice(2 * half, w - 2 * half))
    crop = full[..., y0 : y0 + h, x0 : x0 + w]
    torch.testing.assert_close(patch[inner], crop[inner], **tolerance(torch.float64))


@pytest.mark.parametrize("padding", PADDINGS)
def test_adjoint_matches_first_principles_correlation(padding, tolerance):
    """<A x, y> = <x, A^T y>, with A^T y(q) = sum_p y(p) h_q(p - q): correlation with q's own PSF."""
    x = _image(1, 2, 13, 11, seed=3).requires_grad_(True)
    y = _image(1, 2, 13, 11, seed=4)
    psfs = _field(2, 3, 2, 5)
    (grad,) = torch.autograd.grad(sv_conv2d(x, psfs, padding=padding, backend="reference"), x, y)
    lhs = float((sv_conv2d(x.detach(), psfs, padding=padding, backend="reference") * y).sum())
    assert lhs == pytest.approx(float((x.detach() * grad).sum()), rel=1e-12)
    if padding == "zeros":
        per_pixel = _per_pixel_psfs(psfs, (13, 11))
        y_pad = F.pad(y, (2, 2, 2, 2))
        expected = torch.zeros_like(y)
        for qy in range(13):
            for qx in range(11):
                window = y_pad[0, :, qy : qy + 5, qx : qx + 5]
                expected[0, :, qy, qx] = (window * per_pixel[qy, qx]).sum((-1, -2))
        torch.testing.assert_close(grad, expected, **tolerance(torch.float64))


@pytest.mark.parametrize("backend", ["reference", "cpu", "fft"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_gradcheck(backend, padding):
    x = _image(1, 2, 7, 9).requires_grad_(True)
    psfs = _field(2, 2, 2, 3).requires_grad_(True)

    def fn(x, psfs):
        return sv_conv2d(x, psfs, offset=(1, 2), frame_size=(10, 12), padding=padding, backend=backend)

    assert torch.autograd.gradcheck(fn, (x, psfs), fast_mode=True)


def test_energy_is_conserved_with_normalised_psfs():
    psfs = _field(3, 3, 1, 7)
    psfs = psfs / psfs.sum((-1, -2), keepdim=True)
    x = torch.zeros(1, 1, 31, 31, dtype=torch.float64)
    x[..., 5:26, 5:26] = _image(1, 1, 21, 21)
    out = sv_conv2d(x, psfs, padding="zeros", backend="reference")
    assert float(out.sum()) == pytest.approx(float(x.sum()), rel=1e-12)


# --- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x_shape", "psf_shape", "kwargs", "match"),
    [
        ((3, 8, 8), (2, 2, 3, 3, 3), {}, "x must be"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {}, "field_psfs must be"),
        ((1, 3, 8, 8), (2, 2, 3, 4, 4), {}, "must be odd"),
        ((1, 3, 8, 8), (2, 2, 1, 3, 3), {}, "channels"),
        ((1, 3, 8, 8), (2, 2, 3, 3, 3), {"padding": "circular"}, "padding"),
        ((1, 3, 8, 8), (2, 2, 3, 3, 3), {"backend": "cuda"}, "backend"),
        ((1, 3, 8, 8), (2, 2, 3, 3, 3), {"offset": (4, 0), "frame_size": (10, 10)}, "outside frame_size"),
        ((2, 3, 8, 8), (2, 2, 3, 3, 3), {"offset": [(0, 0), (3, 0)], "frame_size": (10, 10)}, "outside"),
        ((2, 3, 8, 8), (2, 2, 3, 3, 3), {"offset": torch.zeros(3, 2, dtype=torch.long)}, r"\(2, 2\)"),
        ((2, 3, 8, 8), (2, 2, 3, 3, 3), {"offset": torch.zeros(2, 2)}, "integers"),
        ((2, 3, 8, 8), (4, 2, 2, 3, 3, 3), {}, "give field_index"),
        ((2, 3, 8, 8), (4, 2, 2, 3, 3, 3), {"field_index": [0, 4]}, r"\[0, 4\)"),
        ((2, 3, 8, 8), (4, 2, 2, 3, 3, 3), {"field_index": [0, 1, 2]}, "1 or 2 entries"),
        ((2, 3, 8, 8), (4, 2, 2, 3, 3, 3), {"field_index": torch.zeros(2)}, "integers"),
    ],
)
def test_bad_input_is_rejected(x_shape, psf_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sv_conv2d(torch.rand(x_shape), torch.rand(psf_shape), **kwargs)


def test_importing_kernels_does_not_import_triton():
    import subprocess
    import sys

    code = "import sys, degtrans.kernels; print('triton' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --- CPU path against the reference --------------------------------------------------------------------


def _compare_with_reference(fn, x, psfs, tolerance, **kwargs):
    """Output and both gradients (same upstream gradient) of ``fn`` against the float64 reference.

    The reference runs in float64 (on a GPU that also keeps cuDNN's TF32 out of the comparison), and
    the table's tolerance for ``x.dtype`` applies.
    """
    upstream = None
    results = []
    for impl, dtype in ((sv_conv2d_reference, torch.float64), (fn, x.dtype)):
        xi = x.detach().to(dtype).requires_grad_(True)
        pi = psfs.detach().to(dtype).requires_grad_(True)
        out = impl(xi, pi, **kwargs)
        if upstream is None:
            g = torch.Generator().manual_seed(7)
            upstream = torch.rand(out.shape, generator=g, dtype=torch.float64).to(out.device)
        gx, gp = torch.autograd.grad(out, (xi, pi), upstream.to(dtype))
        results.append([t.to(x.dtype) for t in (out, gx, gp)])
    tol = tolerance(x.dtype)
    for name, got, want in zip(("output", "grad x", "grad psfs"), results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, **tol, msg=lambda m, n=name: f"{n}: {m}")


CPU_CASES = [
    # (B, C, H, W, k, rows, cols, offset, frame)
    (2, 3, 19, 23, 5, 2, 3, None, None),
    (1, 3, 19, 23, 5, 3, 2, (6, 3), (40, 33)),
    (1, 1, 17, 13, 9, 1, 1, None, None),
    (1, 2, 6, 7, 11, 3, 3, (2, 1), (20, 20)),  # halo wider than the patch
    (1, 3, 32, 32, 7, 4, 5, None, None),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["direct", "fft", "batched"])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("case", CPU_CASES)
def test_cpu_path_matches_reference(case, padding, method, dtype, tolerance):
    b, c, h, w, k, rows, cols, offset, frame = case
    x = _image(b, c, h, w, dtype)
    psfs = _field(rows, cols, c, k, dtype)
    # Unnormalised PSFs in [0, 1) sum to ~k^2/2; normalise so float32 errors stay at the table's scale.
    psfs = psfs / psfs.sum((-1, -2), keepdim=True)

    def fn(x, psfs, **kw):
        if method == "batched":  # the "fft" backend: every block in one batched transform
            return sv_conv2d(x, psfs, backend="fft", **kw)
        return sv_conv2d_cpu(x, psfs, method=method, **kw)

    _compare_with_reference(
        fn, x, psfs, tolerance, offset=offset or (0, 0), frame_size=frame, padding=padding
    )


# --- batches at several sensor positions, frames and fields -------------------------------------------


def _loop_of_calls(x, fields, offsets, frames, index, backend, padding):
    """The specification of a per-sample batch: one call per image with its own geometry and field."""
    return torch.cat([
        sv_conv2d(x[b : b + 1], fields[int(index[b])], offset=tuple(offsets[b]), frame_size=tuple(frames[b]),
                  padding=padding, backend=backend)
        for b in range(x.shape[0])
    ])  # fmt: skip


def _per_sample_case(dtype=torch.float64, batch=5, size=(13, 17), k=5):
    g = torch.Generator().manual_seed(11)
    fields = torch.rand(4, 3, 3, 2, k, k, generator=g, dtype=dtype)
    fields = fields / fields.sum((-1, -2), keepdim=True)
    frames = [(40, 50), (40, 50), (31, 60), (40, 50), (25, 20)][:batch]
    offsets = [(int(torch.randint(0, fh - size[0] + 1, (1,), generator=g)),
                int(torch.randint(0, fw - size[1] + 1, (1,), generator=g))) for fh, fw in frames]  # fmt: skip
    index = torch.tensor([2, 0, 3, 2, 1][:batch])
    return _image(batch, 2, *size, dtype), fields, offsets, frames, index


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("backend", ["reference", "cpu", "fft"])
def test_per_sample_geometry_equals_loop_of_calls(backend, padding, tolerance):
    x, fields, offsets, frames, index = _per_sample_case()
    x = x.requires_grad_(True)
    fields = fields.requires_grad_(True)
    upstream = _image(*x.shape, seed=5)
    got = sv_conv2d(x, fields, offset=offsets, frame_size=torch.tensor(frames), field_index=index,
                    padding=padding, backend=backend)  # fmt: skip
    want = _loop_of_calls(x, fields, offsets, frames, index, "reference", padding)
    grads_got = torch.autograd.grad(got, (x, fields), upstream)
    grads_want = torch.autograd.grad(want, (x, fields), upstream)
    for a, b in zip((got, *grads_got), (want, *grads_want), strict=True):
        torch.testing.assert_close(a, b, **tolerance(torch.float64))
    assert all(float(g.abs().sum()) > 0 for g in grads_got[1])  # every field is used by some image


def test_per_sample_gradcheck_of_the_batched_backend():
    x, fields, offsets, frames, index = _per_sample_case(batch=3, size=(6, 7), k=3)
    x = x.requires_grad_(True)
    fields = fields.requires_grad_(True)

    def fn(x, fields):
        return sv_conv2d(x, fields, offset=offsets, frame_size=frames, field_index=index, backend="fft")

    assert torch.autograd.gradcheck(fn, (x, fields), fast_mode=True)


def test_shared_geometry_given_per_sample_is_the_shared_call():
    x = _image(3, 3, 19, 23)
    psfs = _field(2, 3, 3, 5)
    shared = sv_conv2d(x, psfs, offset=(4, 6), frame_size=(40, 40), backend="fft")
    per_sample = sv_conv2d(
        x, psfs[None], offset=[(4, 6)] * 3, frame_size=[(40, 40)] * 3, field_index=[0, 0, 0], backend="fft"
    )
    assert torch.equal(shared, per_sample)


def test_batched_plan_uses_two_slots_on_a_frame_and_covers_patches_with_their_own_tiles():
    from degtrans.kernels.sv_conv.batched import make_plan
    from degtrans.kernels.sv_conv.placement import make_placement

    frame = make_placement("t", (1, 3, 300, 400), (0, 0), None, None, 1)
    plan = make_plan((1, 3, 300, 400), (5, 7), 31, frame, "reflect")
    # The runs between tile centres: 2 tiles per block along each axis, blocks about one tile long.
    assert (plan.y.slots, plan.x.slots) == (2, 2) and plan.y.blocks == 6 and plan.x.blocks == 8
    offsets = torch.tensor([[0, 0], [140, 300], [250, 10]])
    patches = make_placement("t", (3, 3, 40, 40), offsets, (300, 400), torch.tensor([1, 0, 1]), 2)
    plan = make_plan((3, 3, 40, 40), (5, 7), 31, patches, "reflect")
    # Every slot weight of a sample sums (over slots) to 1 inside its blocks, and the tiles are its own.
    assert plan.y.tiles.shape[0] == 3 and int(plan.y.tiles[0].min()) == 0 and int(plan.y.tiles[2].max()) == 4
    total = plan.y.weights.sum(2)
    assert torch.allclose(total[total > 0], torch.ones(()).double())


def test_batched_plan_cuts_long_runs_into_pieces_and_matches_the_reference(tolerance):
    from degtrans.kernels.sv_conv.batched import make_plan
    from degtrans.kernels.sv_conv.placement import make_placement

    shape = (1, 2, 90, 120)
    plan = make_plan(shape, (3, 4), 5, make_placement("t", shape, (0, 0), None, None, 1), "reflect")
    # Runs of 30 between edge runs of 17 along x: cut into pieces of about 17, still 2 tiles each.
    assert plan.x.slots == 2 and plan.x.blocks == 8 and plan.x.length == 17
    psfs = _field(3, 4, 2, 5)
    psfs = psfs / psfs.sum((-1, -2), keepdim=True)
    fn = lambda x, p, **kw: sv_conv2d(x, p, backend="fft", **kw)  # noqa: E731
    _compare_with_reference(fn, _image(*shape), psfs, tolerance, padding="reflect")


def test_batched_backend_under_bf16_autocast(tolerance):
    x = _image(2, 3, 21, 26, torch.float32)
    psfs = _field(3, 2, 3, 7, torch.float32)
    psfs = psfs / psfs.sum((-1, -2), keepdim=True)
    xb, pb = x.bfloat16().requires_grad_(True), psfs.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sv_conv2d(xb, pb, offset=[(0, 0), (5, 3)], frame_size=(40, 40), backend="fft")
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert xb.grad is not None and xb.grad.dtype == torch.bfloat16
    want = _loop_of_calls(xb.detach().double(), pb.double()[None], [(0, 0), (5, 3)], [(40, 40)] * 2, [0, 0],
                          "reference", "reflect")  # fmt: skip
    # Computed in float32; only the bfloat16 rounding of the output differs.
    torch.testing.assert_close(out.double(), want, **tolerance(torch.bfloat16))


def test_auto_on_cuda_is_chosen_by_the_cost_model():
    from degtrans.kernels.sv_conv.batched import cuda_choice
    from degtrans.kernels.sv_conv.placement import make_placement

    def choice(h, w, k):
        return cuda_choice((1, 3, h, w), (5, 7), k, make_placement("t", (1, 3, h, w), (0, 0), None, None, 1),
                           "reflect")  # fmt: skip

    # The FFT floor does not grow with k, the direct kernel grows with k^2: large k -> fft, small -> triton.
    assert choice(3000, 4000, 31) == "fft" and choice(3000, 4000, 63) == "fft"
    assert choice(3000, 4000, 3) == "triton"


def test_auto_backend_on_cpu_is_the_cpu_path(tolerance):
    x = _image(1, 3, 19, 23)
    psfs = _field(2, 3, 3, 5)
    torch.testing.assert_close(
        sv_conv2d(x, psfs), sv_conv2d_cpu(x, psfs, padding="reflect"), **tolerance(torch.float64)
    )


def test_psffield_psfs_are_accepted_directly(tolerance):
    field = PSFField(
        psfs=np.ones((2, 2, 3, 3, 3), np.float32) / 9, image_size=(16, 16), channels=("R", "G", "B")
    )
    x = torch.ones(1, 3, 16, 16)
    out = sv_conv2d(x, torch.from_numpy(field.psfs))
    torch.testing.assert_close(out, x, **tolerance(torch.float32))


# --- Triton against the reference (interpreter on CPU) -------------------------------------------------


def _triton(x, psfs, **kw):
    from degtrans.kernels.sv_conv.autograd import sv_conv2d_triton

    return sv_conv2d_triton(x, psfs, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding", PADDINGS)
def test_triton_matches_reference(padding, dtype, tolerance):
    # Odd sizes, tiles that do not divide the frame; one image of 2 channels keeps the interpreter quick.
    x = _image(1, 2, 19, 23, dtype)
    psfs = _field(2, 3, 2, 5, dtype)
    psfs = psfs / psfs.sum((-1, -2), keepdim=True)
    _compare_with_reference(_triton, x, psfs, tolerance, padding=padding)


def test_triton_patch_with_offset_matches_reference(tolerance):
    x = _image(1, 1, 13, 11)
    psfs = _field(3, 3, 1, 3)
    kwargs = {"offset": (9, 20), "frame_size": (30, 40), "padding": "reflect"}
    _compare_with_reference(_triton, x, psfs, tolerance, **kwargs)


@pytest.mark.gpu
@pytest.mark.parametrize(("backend", "k"), [("triton", 5), ("triton", 31), ("fft", 31)])
@pytest.mark.parametrize("padding", PADDINGS)
def test_large_on_gpu(padding, backend, k, tolerance):
    x = _image(2, 3, 301, 517, torch.float32).cuda()
    psfs = _field(4, 6, 3, k, torch.float32).cuda()
    psfs = psfs / psfs.sum((-1, -2), keepdim=True)
    _compare_with_reference(
        lambda a, b, **kw: sv_conv2d(a, b, backend=backend, **kw), x, psfs, tolerance, padding=padding
    )


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "fft"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_gpu(dtype, backend, tolerance):
    x = _image(1, 3, 130, 97, torch.float32).cuda()
    psfs = _field(3, 3, 3, 9, torch.float32).cuda()
    psfs = psfs / psfs.sum((-1, -2), keepdim=True)
    # The reference sees the same rounded inputs, in float64; only the kernel's arithmetic differs.
    want = sv_conv2d_reference(x.to(dtype).double(), psfs.to(dtype).double()).float()
    with torch.autocast("cuda", dtype=dtype):
        got = sv_conv2d(x.to(dtype), psfs.to(dtype), backend=backend)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, **tolerance(dtype))


@pytest.mark.gpu
def test_per_sample_batch_on_gpu_equals_loop_of_calls(tolerance):
    x, fields, offsets, frames, index = _per_sample_case(dtype=torch.float32, batch=5, size=(21, 19), k=7)
    x, fields = x.cuda(), fields.cuda()
    got = sv_conv2d(x, fields, offset=offsets, frame_size=frames, field_index=index)
    want = _loop_of_calls(x.double(), fields.double(), offsets, frames, index, "reference", "reflect")
    torch.testing.assert_close(got.double(), want, **tolerance(torch.float32))


def test_module_with_several_fields_equals_function():
    from degtrans.kernels import SVConv2d

    x, fields, offsets, frames, index = _per_sample_case(batch=3)
    module = SVConv2d(fields, frame_size=(40, 50))
    offsets = [(1, 2), (20, 9), (3, 30)]
    want = sv_conv2d(x, fields, offset=offsets, frame_size=(40, 50), field_index=index[:3])
    assert torch.equal(module(x, offsets, index[:3]), want)


def test_module_equals_function():
    from degtrans.kernels import SVConv2d

    psfs = _field(2, 3, 3, 5)
    x = _image(1, 3, 12, 14)
    module = SVConv2d(psfs, frame_size=(30, 30), padding="zeros", learnable=True)
    out = module(x, offset=(4, 9))
    assert torch.equal(out, sv_conv2d(x, psfs, offset=(4, 9), frame_size=(30, 30), padding="zeros"))
    out.sum().backward()
    assert module.psfs.grad is not None and module.psfs.grad.shape == psfs.shape
    assert "psfs" in dict(SVConv2d(psfs).named_buffers())
