import pytest
import torch
import torch.nn.functional as F

from degtrans.restore.coords import fov_coords
from degtrans.restore.models.blocks import ConvBlock, FOVBlock
from degtrans.restore.models.deform import DeformResBlock, ModulatedDeformConv2d, deform_conv2d
from degtrans.restore.models.fovkpn import FOVKPN
from degtrans.restore.models.wiener import DeepWiener, psf_to_otf, wiener_deconv


def _grads_finite(module: torch.nn.Module) -> None:
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def _psf(batch: int, channels: int, k: int) -> torch.Tensor:
    psf = torch.rand(batch, channels, k, k, generator=torch.Generator().manual_seed(0))
    return psf / psf.sum((-1, -2), keepdim=True)


# deformable convolution


def test_deform_conv_with_zero_offsets_equals_a_plain_convolution(tolerance):
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64)
    weight, bias = torch.randn(5, 4, 3, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    offset = torch.zeros(2, 2 * 2 * 9, 9, 11, dtype=torch.float64)  # two offset groups
    out = deform_conv2d(x, offset, torch.ones(2, 2 * 9, 9, 11, dtype=torch.float64), weight, bias)
    torch.testing.assert_close(out, F.conv2d(x, weight, bias, padding=1), **tolerance(torch.float64))


def test_deform_conv_integer_offset_is_a_shift(tolerance):
    x = torch.randn(1, 3, 8, 10, dtype=torch.float64)
    weight = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    offset = torch.zeros(1, 2 * 9, 8, 10, dtype=torch.float64)
    offset[:, 1::2] = 1.0  # every tap samples one pixel to the right
    shifted = F.pad(x, (0, 1))[..., 1:]
    out = deform_conv2d(x, offset, None, weight)
    # Column 0 differs: the plain conv sees zero padding where the shifted taps still see x[..., 0].
    torch.testing.assert_close(
        out[..., 1:], F.conv2d(shifted, weight, padding=1)[..., 1:], **tolerance(torch.float64)
    )


def test_deform_conv_mask_scales_linearly(tolerance):
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    offset = torch.randn(1, 18, 6, 6, dtype=torch.float64)
    mask = torch.rand(1, 9, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(
        deform_conv2d(x, offset, 0.5 * mask, weight), 0.5 * deform_conv2d(x, offset, mask, weight),
        **tolerance(torch.float64),
    )  # fmt: skip


def test_deform_conv_gradcheck():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    # Fractional offsets away from integers: bilinear sampling is not differentiable at integer positions.
    offset = (0.3 + 0.4 * torch.rand(1, 18, 3, 4, dtype=torch.float64, generator=gen)).requires_grad_()
    mask = torch.rand(1, 9, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(2, 2, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: deform_conv2d(*a), (x, offset, mask, weight))


def test_deform_conv_rejects_bad_shapes():
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(1, 7, 5, 5), None, torch.zeros(3, 2, 3, 3))
    with pytest.raises(ValueError, match="weight"):
        deform_conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(1, 18, 5, 5), None, torch.zeros(3, 4, 3, 3))


@pytest.mark.parametrize(
    "block",
    [ModulatedDeformConv2d(4, 6, 3, 8), DeformResBlock(4, 8), ConvBlock(4, 4)],
    ids=lambda b: type(b).__name__,
)
def test_block_shapes_and_gradients(block):
    x = torch.randn(2, 4, 8, 8)
    out = block(x)
    assert out.shape[0] == 2 and out.shape[-2:] == (8, 8)
    out.square().mean().backward()
    _grads_finite(block)


def test_fov_block_starts_as_identity_and_learns_from_coordinates():
    block = FOVBlock(4)
    features = torch.randn(2, 4, 6, 6)
    coords = fov_coords(torch.tensor([0, 10]), torch.tensor([0, 5]), 32, 32, 6, 6)
    torch.testing.assert_close(block(features, coords), features)
    block(features, coords).sum().backward()
    assert block.out.weight.grad.abs().sum() > 0


# coordinates


def test_fov_coords_of_a_patch_are_the_crop_of_the_frame_coords():
    frame = fov_coords(0, 0, 40, 60, 40, 60)
    patch = fov_coords(torch.tensor([8]), torch.tensor([20]), 40, 60, 16, 24)
    torch.testing.assert_close(patch, frame[..., 8:24, 20:44])
    assert frame[0, 0].min() > -1 and frame[0, 0].max() < 1
    assert frame[0, 2].max() == pytest.approx(1.0, abs=0.05) and frame[0, 2].min() < 0.05
    torch.testing.assert_close(frame[0, 0], -frame[0, 0].flip(-1))  # x is antisymmetric about the centre


# FOV-KPN


def test_fovkpn_shapes_gradients_and_identity_start():
    model = FOVKPN(width=4, offset_channels=4)
    x = torch.rand(2, 3, 20, 28)  # not a multiple of 8: padded inside
    coords = fov_coords(torch.tensor([0, 12]), torch.tensor([3, 0]), 64, 64, 20, 28)
    out = model(x, coords)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x)  # identity kernel head, zero residual
    (out - 0.5).square().mean().backward()
    assert model.kernel_head.weight.grad.abs().sum() > 0
    assert model.residual_head.weight.grad.abs().sum() > 0


def test_fovkpn_rejects_even_kernels():
    with pytest.raises(ValueError, match="odd"):
        FOVKPN(kernel_size=4)


# deep Wiener


def test_wiener_layer_with_identity_psf_and_zero_phi_returns_its_input(tolerance):
    features = torch.rand(2, 4, 12, 10, dtype=torch.float64)
    delta = torch.zeros(2, 4, 5, 5, dtype=torch.float64)
    delta[..., 2, 2] = 1.0
    out = wiener_deconv(features, delta, torch.zeros(2, 4, 2, dtype=torch.float64))
    torch.testing.assert_close(out.double(), features, atol=1e-6, rtol=1e-5)  # computed in float32


def test_wiener_layer_inverts_a_circular_blur_it_knows(tolerance):
    """With phi = 0 the layer is the exact inverse of the (mirror-extended, circular) blur it models."""
    clean = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    psf = torch.tensor([[0.0, 0.1, 0.0], [0.1, 0.6, 0.1], [0.0, 0.1, 0.0]], dtype=torch.float64)  # OTF > 0
    psf = psf.expand(1, 3, 3, 3)
    extended = torch.cat([clean, clean.flip(-1)], -1)
    extended = torch.cat([extended, extended.flip(-2)], -2)
    blurred = torch.fft.irfft2(torch.fft.rfft2(extended) * psf_to_otf(psf, 32, 32), s=(32, 32))[..., :16, :16]
    restored = wiener_deconv(blurred, psf, torch.zeros(1, 3, 2, dtype=torch.float64))
    torch.testing.assert_close(restored.double(), clean, atol=1e-4, rtol=1e-4)  # float32 FFT


def test_wiener_layer_gradients_reach_phi_and_features():
    features = torch.rand(1, 3, 8, 8, requires_grad=True)
    phi = torch.full((1, 3, 2), 0.05, requires_grad=True)
    wiener_deconv(features, _psf(1, 3, 5), phi).square().sum().backward()
    assert features.grad.abs().sum() > 0 and phi.grad.abs().sum() > 0


def test_deep_wiener_shapes_gradients_and_needs_the_psf():
    model = DeepWiener(features=6, width=4)
    x = torch.rand(2, 3, 15, 17)
    coords = fov_coords(torch.tensor([0, 4]), torch.tensor([0, 4]), 32, 32, 15, 17)
    out = model(x, coords, _psf(2, 3, 5))
    assert out.shape == x.shape
    out.square().mean().backward()
    _grads_finite(model)
    with pytest.raises(ValueError, match="PSF"):
        model(x, coords)
    with pytest.raises(ValueError, match="multiple"):
        DeepWiener(features=7)
