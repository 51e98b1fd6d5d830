"""Spatially variant PSF convolution and per-pixel kernel application (Triton, CPU path, reference)."""

from degtrans.kernels.pixel_kernels import PixelKernels, apply_pixel_kernels
from degtrans.kernels.sv_conv import SVConv2d, sv_conv2d

__all__ = ["PixelKernels", "SVConv2d", "apply_pixel_kernels", "sv_conv2d"]
