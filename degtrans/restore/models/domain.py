"""Where the PSF acts: processed image <-> linear camera RGB.

``degtrans simulate`` blurs in linear camera RGB (after the inverse ISP, before mosaic and noise) and
stores each pair's ISP draw (``isp``, the ``ISP_COLUMNS`` of :mod:`degtrans.pairs`) and noise
variances (``noise``: ``shot``, ``read``; ``var(x) = shot * x + read`` in those linear units). With
the ISP draw, :func:`to_linear` inverts the simulation's ``process`` exactly; without it (toy data,
photographs of unknown processing) the sRGB transfer curve stands in, as for the classical baselines.
"""

from __future__ import annotations

import torch

from degtrans.simulate.isp import (
    ISPParams,
    apply_ccm,
    gamma_expansion,
    inverse_smoothstep,
    linear_to_srgb,
    process,
    srgb_to_linear,
    total_gains,
)


def to_linear(image: torch.Tensor, isp: torch.Tensor | None = None) -> torch.Tensor:
    """Processed ``image (B, 3, H, W)`` in [0, 1] -> linear camera RGB (the raw sensor's units).

    The exact inverse of :func:`degtrans.simulate.isp.process` for the pair's ``isp (B, 12)``; the
    inverse sRGB curve when ``isp`` is ``None``.
    """
    if isp is None:
        return srgb_to_linear(image)
    params = ISPParams.from_vector(isp.to(image.dtype))
    x = apply_ccm(gamma_expansion(inverse_smoothstep(image)), params.rgb2cam)
    return x / total_gains(params, x)


def to_display(linear: torch.Tensor, isp: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`to_linear`: the simulation's ISP (or the sRGB curve), values in [0, 1]."""
    if isp is None:
        return linear_to_srgb(linear)
    return process(linear, ISPParams.from_vector(isp.to(linear.dtype)))
