"""Spatially variant PSF convolution, its adjoint, and per-pixel kernel application (Triton, CPU path,
reference); the PSF model's Fourier layer is :mod:`degtrans.kernels.spectral`."""

from degtrans.kernels.pixel_kernels import PixelKernels, apply_pixel_kernels
from degtrans.kernels.sv_conv import SVConv2d, sv_conv2d, sv_conv2d_adjoint

__all__ = ["PixelKernels", "SVConv2d", "apply_pixel_kernels", "sv_conv2d", "sv_conv2d_adjoint"]
