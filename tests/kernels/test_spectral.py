"""The Fourier-domain PSF model against first principles: circular convolution, round trips, adjoints."""

import torch

from degtrans.kernels.spectral import (
    correlate,
    fast_fft_len,
    otf_to_psf,
    psf_to_otf,
    symmetric_extend,
)


def _circular_conv(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """y[p] = sum_o h[o] x[p - o], offsets -r..r, wrapping around."""
    r = h.shape[-1] // 2
    out = torch.zeros_like(x)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out += h[..., dy + r, dx + r, None, None] * torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    return out


def test_fast_fft_len_is_smallest_5_smooth():
    def smooth(m: int) -> bool:
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in [*range(1, 400), 1054]:
        m = fast_fft_len(n)
        assert m >= n and smooth(m)
        assert not any(smooth(j) for j in range(n, m))


def test_delta_otf_is_ones_and_product_is_circular_convolution():
    g = torch.Generator().manual_seed(0)
    delta = torch.zeros(5, 5, dtype=torch.float64)
    delta[2, 2] = 1
    assert torch.allclose(psf_to_otf(delta, 12, 9), torch.ones(12, 5, dtype=torch.complex128))
    x = torch.rand(2, 13, 11, generator=g, dtype=torch.float64)
    h = torch.rand(2, 5, 5, generator=g, dtype=torch.float64)
    y = torch.fft.irfft2(torch.fft.rfft2(x) * psf_to_otf(h, 13, 11), s=(13, 11))
    assert torch.allclose(y, _circular_conv(x, h))


def test_otf_round_trip():
    h = torch.rand(3, 7, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(otf_to_psf(psf_to_otf(h, 16, 15), 7, 16, 15), h)


def test_correlate_is_the_adjoint_in_the_kernel():
    g = torch.Generator().manual_seed(2)
    shape = (14, 13)
    x = torch.rand(*shape, generator=g, dtype=torch.float64)
    y = torch.rand(*shape, generator=g, dtype=torch.float64)
    h = torch.rand(5, 5, generator=g, dtype=torch.float64)
    forward = torch.fft.irfft2(psf_to_otf(h, *shape) * torch.fft.rfft2(x), s=shape)
    back = correlate(torch.fft.rfft2(y), torch.fft.rfft2(x), 5, shape)
    assert torch.allclose((forward * y).sum(), (h * back).sum())


def test_symmetric_extend_mirrors():
    x = torch.arange(6.0).reshape(2, 3)
    e = symmetric_extend(x)
    assert e.shape == (4, 6)
    assert torch.equal(e[:2, 3:], x.flip(-1)) and torch.equal(e[2:], e[:2].flip(-2))


def test_field_blur_layouts_agree_with_sv_conv2d():
    import numpy as np

    from degtrans.field import PSFField
    from degtrans.kernels import sv_conv2d

    rng = np.random.default_rng(0)
    psfs = rng.random((2, 3, 3, 5, 5)).astype(np.float32)
    psfs /= psfs.sum(axis=(-2, -1), keepdims=True)
    field = PSFField(psfs=psfs, image_size=(17, 19))
    image = rng.random((17, 19, 3)).astype(np.float32)
    expected = sv_conv2d(torch.from_numpy(image.transpose(2, 0, 1))[None], torch.from_numpy(psfs))[0].numpy()
    assert np.allclose(field.blur(image), expected.transpose(1, 2, 0), atol=1e-6)
    assert np.allclose(field.blur(image.transpose(2, 0, 1), layout="chw"), expected, atol=1e-6)
    assert np.allclose(field.blur(image[..., 1], channel=1), expected[1], atol=1e-6)
