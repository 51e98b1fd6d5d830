"""The PSF model in the Fourier domain, once: every stage that needs a kernel's spectrum calls here.

Convention: a centred ``k x k`` kernel (``k`` odd, ``r = k // 2``) acts as ``y[p] = sum_o h[o] x[p - o]``
for offsets ``o`` in ``-r..r``; on an FFT grid of ``(height, width)`` its offset ``o`` is stored at
``o mod (height, width)``, so ``psf_to_otf`` of the delta is all ones and the product ``X * H`` is the
circular convolution. ``otf_to_psf`` reads the offsets ``-r..r`` back; ``correlate`` is the adjoint of
the product with respect to the kernel: ``<irfft2(X H), y> = <h, correlate(rfft2(y), X, k)>``.
All spectra are ``rfft2`` half spectra: (..., height, width // 2 + 1).

The product-convolution backends of ``sv_conv2d`` use the *full* (linear) convolution instead:
``kernel_spectrum`` keeps tap ``(0, 0)`` of the kernel at the origin, so on a grid of at least
``L + k - 1`` the product with a window's spectrum is the window's full convolution, whose sample ``j``
is output offset ``j - (k - 1)`` from the window's start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fast_fft_len(n: int) -> int:
    """Smallest integer >= n whose only prime factors are 2, 3 and 5 (fast for pocketfft and cuFFT)."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p235 = p35
            while p235 < n:
                p235 *= 2
            best = min(best, p235)
            p35 *= 3
        p5 *= 5
    return best


def psf_to_otf(psf: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Optical transfer function of centred kernels ``psf: (..., k, k)`` on a ``height x width`` grid.

    Returns:
        (..., height, width // 2 + 1) complex ``rfft2`` of the kernel with its centre moved to (0, 0).
    """
    k = psf.shape[-1]
    if k > height or k > width:
        raise ValueError(f"psf_to_otf: kernel of size {k} does not fit a {height}x{width} grid")
    padded = F.pad(psf, (0, width - k, 0, height - k))
    return torch.fft.rfft2(torch.roll(padded, shifts=(-(k // 2), -(k // 2)), dims=(-2, -1)))


def kernel_spectrum(psf: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(..., k, k) kernels -> (..., H, W // 2 + 1) ``rfft2`` zero-padded to ``shape``, not centred (full
    linear convolution, see the module docstring)."""
    return torch.fft.rfft2(psf, s=shape)


def circular_blur(x: torch.Tensor, otf: torch.Tensor) -> torch.Tensor:
    """(..., H, W) image -> its circular convolution with the kernel of ``otf`` (..., H, W // 2 + 1)."""
    return torch.fft.irfft2(torch.fft.rfft2(x) * otf, s=x.shape[-2:])


def circular_blur_adjoint(y: torch.Tensor, otf: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`circular_blur` in the image: the circular correlation with the kernel."""
    return torch.fft.irfft2(torch.fft.rfft2(y) * otf.conj(), s=y.shape[-2:])


def otf_to_psf(otf: torch.Tensor, k: int, height: int, width: int) -> torch.Tensor:
    """(..., height, width // 2 + 1) spectrum -> (..., k, k) its real kernel at offsets ``-r..r``."""
    return centred_crop(torch.fft.irfft2(otf, s=(height, width)), k)


def centred_crop(image: torch.Tensor, k: int) -> torch.Tensor:
    """(..., H, W) circular image -> (..., k, k) its values at offsets ``-r..r`` around (0, 0)."""
    r = k // 2
    return torch.roll(image, shifts=(r, r), dims=(-2, -1))[..., :k, :k]


def correlate(
    residual_spectrum: torch.Tensor, source_spectrum: torch.Tensor, k: int, shape: tuple[int, int]
) -> torch.Tensor:
    """Adjoint of ``h -> irfft2(psf_to_otf(h) * X)`` for ``h: (..., k, k)``.

    Args:
        residual_spectrum: (..., H, W // 2 + 1) ``rfft2`` of the image the adjoint acts on.
        source_spectrum: (..., H, W // 2 + 1) ``rfft2`` of the source ``X`` (broadcast against it).
        k: the kernel size (odd).
        shape: the grid ``(H, W)`` (the half spectrum does not say whether ``W`` is odd).

    Returns:
        (..., k, k) the cross-correlation of the residual with the source at offsets ``-r..r``.
    """
    return otf_to_psf(residual_spectrum * source_spectrum.conj(), k, *shape)


def symmetric_extend(x: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., 2H, 2W) mirror extension: its periodic continuation is continuous."""
    x = torch.cat([x, x.flip(-1)], dim=-1)
    return torch.cat([x, x.flip(-2)], dim=-2)
