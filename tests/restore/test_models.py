import pytest
import torch
import torch.nn.functional as F

from degtrans.kernels.spectral import psf_to_otf
from degtrans.restore.coords import fov_coords
from degtrans.restore.models.blocks import ConvBlock, FOVBlock
from degtrans.restore.models.deform import DeformResBlock, ModulatedDeformConv2d, deform_conv2d
from degtrans.restore.models.fovkpn import FOVKPN
from degtrans.restore.models.kpn import MultiDilationKPN
from degtrans.restore.models.wiener import DeepWiener, data_consistency, wiener_deconv


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
    assert model.kpn.predict.weight.grad.abs().sum() > 0
    assert model.residual_head.weight.grad.abs().sum() > 0


def test_fovkpn_rejects_even_kernels():
    with pytest.raises(ValueError, match="odd"):
        FOVKPN(kernel_size=4)


def test_multi_dilation_head_starts_as_identity_and_reaches_17_pixels():
    head = MultiDilationKPN(features=4, channels=3, kernel_size=5, dilations=(1, 2, 3, 4))
    image, features = torch.rand(1, 3, 24, 24), torch.randn(1, 4, 24, 24)
    torch.testing.assert_close(head(image, features), image)
    # Weight 1 on the last tap (offset +2, +2) of the dilation-4 kernels: every pixel also reads the
    # pixel 8 rows and columns further, at the fusion's 1/4.
    with torch.no_grad():
        head.predict.bias.view(4, 3, 25)[3, :, 24] = 1.0
    impulse = torch.zeros(1, 3, 24, 24)
    impulse[..., 12, 12] = 1.0
    with torch.no_grad():
        out = head(impulse, torch.zeros(1, 4, 24, 24))
    torch.testing.assert_close(out[0, :, 4, 4], torch.full((3,), 0.25))
    torch.testing.assert_close(out[0, :, 12, 12], torch.ones(3))
    assert float(out.abs().sum()) == pytest.approx(3 * 1.25)


def test_fovkpn_has_deformable_blocks_at_every_decoder_level_with_offset_groups():
    model = FOVKPN(width=8, offset_channels=4, deform_blocks=1, offset_groups=8)
    blocks = [m for m in model.modules() if isinstance(m, DeformResBlock)]
    assert len(blocks) == 1 + 3
    assert {b.dcn.offset_groups for b in blocks} == {8}
    cpu = FOVKPN(width=8, offset_channels=4, deform_blocks=1, decoder_deform=1)
    assert sum(isinstance(m, DeformResBlock) for m in cpu.modules()) == 2
    assert isinstance(cpu.dec_deform[0], torch.nn.Identity) and isinstance(cpu.dec_deform[2], DeformResBlock)


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


@pytest.mark.parametrize(("levels", "stages"), [(1, 1), (3, 1), (2, 2)])
def test_deep_wiener_depth_and_stages_keep_shapes_and_start_as_its_first_stage(levels, stages):
    x = torch.rand(2, 3, 15, 21)
    coords = fov_coords(torch.tensor([0, 4]), torch.tensor([0, 4]), 32, 32, 15, 21)
    deep = DeepWiener(features=6, width=4, levels=levels, stages=stages)
    shallow = DeepWiener(features=6, width=4, levels=2, stages=1)
    shared = {k: v for k, v in shallow.state_dict().items() if not k.startswith(("refine", "log_estimate"))}
    deep.load_state_dict(shared, strict=False)
    with torch.no_grad():  # zero-initialised output convs: both are the feature-space Wiener filter
        assert torch.allclose(deep(x, coords, _psf(2, 3, 5)), shallow(x, coords, _psf(2, 3, 5)))
    assert len(deep.refine) == stages and len(deep.refine[0].dec) == levels - 1
    deep(x, coords, _psf(2, 3, 5)).square().mean().backward()
    assert all(stage.out.weight.grad.abs().sum() > 0 for stage in deep.refine)
    with pytest.raises(ValueError, match="levels"):
        DeepWiener(features=6, levels=0)


def test_deep_wiener_stages_keep_gradients_finite_on_saturated_and_black_pixels():
    model = DeepWiener(features=6, width=4, stages=2)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained second stage: its gradient reaches the first estimate
        model.refine[1].out.weight.normal_(0.0, 0.1, generator=generator)
    x = torch.rand(2, 3, 24, 24, generator=generator)
    x[:, :, :6], x[:, :, -6:] = 1.0, 0.0  # the first estimate is exactly 1 and 0 there
    coords = fov_coords(torch.tensor([0, 4]), torch.tensor([0, 4]), 32, 32, 24, 24)
    isp = torch.tensor([[2.0, 1.0, 1.5, 1, 0, 0, 0, 1, 0, 0, 0, 1]] * 2)
    model(x, coords, _psf(2, 3, 5), torch.tensor([[1e-2, 1e-4]] * 2), isp).sum().backward()
    _grads_finite(model)


def test_deep_wiener_stays_finite_on_a_patch_whose_estimated_noise_is_zero():
    """A clipped or flat patch without a given noise level (a photograph): the MAD estimate is 0."""
    model = DeepWiener(features=6, width=4, stages=2)
    with torch.no_grad():
        model.snr_head.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(0))
    x = torch.ones(2, 3, 24, 24)
    x[1] = 0.25
    coords = fov_coords(torch.tensor([0, 4]), torch.tensor([0, 4]), 32, 32, 24, 24)
    out = model(x, coords, _psf(2, 3, 5))
    assert torch.isfinite(out).all()
    out.sum().backward()
    _grads_finite(model)


def test_data_consistency_with_a_delta_psf_is_the_weighted_mean_and_recovers_a_known_blur(tolerance):
    generator = torch.Generator().manual_seed(1)
    y, z = torch.rand(2, 3, 12, 14, generator=generator, dtype=torch.float64)
    delta = torch.zeros(1, 3, 5, 5, dtype=torch.float64)
    delta[..., 2, 2] = 1.0
    rho = torch.tensor([[0.5, 1.0, 3.0]], dtype=torch.float64)
    expected = (y + rho[..., None, None] * z) / (1 + rho[..., None, None])
    consistent = data_consistency(y[None], z[None], delta, rho).double()
    torch.testing.assert_close(consistent, expected, **tolerance(torch.float32))
    # Blurred with the kernel it is given, at a mirror boundary as its extension (exact for a symmetric
    # kernel): a tiny rho recovers the image.
    kernel = torch.tensor([[0.0, 0.1, 0.0], [0.1, 0.6, 0.1], [0.0, 0.1, 0.0]], dtype=torch.float64)
    kernel = kernel.expand(1, 3, 3, 3)  # its OTF stays >= 0.2: invertible
    sharp = torch.rand(1, 3, 12, 14, generator=generator, dtype=torch.float64)
    blurred = F.conv2d(
        F.pad(sharp, (1, 1, 1, 1), mode="replicate"), kernel.flip(-1, -2).transpose(0, 1), groups=3
    )
    recovered = data_consistency(blurred, torch.zeros_like(sharp), kernel, torch.full((1, 3), 1e-9))
    assert (recovered.double() - sharp).abs().max() < 1e-4
    # Noise-free pairs give rho = 0: a kernel whose OTF vanishes (a 2-px box) must stay finite.
    box = torch.zeros(1, 3, 3, 3)
    box[..., 1, 1:] = 0.5
    assert torch.isfinite(data_consistency(sharp.float(), sharp.float(), box, torch.zeros(1, 3))).all()


def test_deep_wiener_for_photographs_ignores_the_isp_and_noise_it_is_given():
    x = 0.1 + 0.8 * torch.rand(2, 3, 16, 16)
    coords = fov_coords(torch.tensor([0, 4]), torch.tensor([0, 4]), 32, 32, 16, 16)
    psf, noise = _psf(2, 3, 5), torch.tensor([[1e-2, 1e-4], [1e-3, 1e-5]])
    isp = torch.tensor([[2.0, 1.0, 1.5, 1, 0, 0, 0, 1, 0, 0, 0, 1]] * 2)
    told, blind = DeepWiener(features=6, width=4), DeepWiener(features=6, width=4, known_isp=False)
    blind.load_state_dict(told.state_dict())
    with torch.no_grad():
        assert torch.equal(blind(x, coords, psf, noise, isp), told(x, coords, psf))
        assert not torch.allclose(told(x, coords, psf, noise, isp), told(x, coords, psf))
