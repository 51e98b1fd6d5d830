"""Spatially variant PSF convolution and per-pixel kernel application (Triton, CPU path, reference)."""

from degtrans.kernels.pixel_kernels import apply_pixel_kernels
from degtrans.kernels.sv_conv import sv_conv2d

__all__ = ["apply_pixel_kernels", "sv_conv2d"]
