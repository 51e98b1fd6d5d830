"""Where the PSF acts: processed image <-> linear camera RGB, and the sensor noise variance there.

``degtrans simulate`` blurs in linear camera RGB (after the inverse ISP, before mosaic and noise) and
stores each pair's ISP draw (``isp``, the ``ISP_COLUMNS`` of :mod:`degtrans.pairs`) and noise
variances (``noise``: ``shot``, ``read``; ``var(x) = shot * x + read`` in those linear units). With
the ISP draw, :func:`to_linear` inverts the simulation's ``process`` exactly; without it (toy data,
photographs of unknown processing) the sRGB transfer curve stands in, as for the classical baselines.
"""

from __future__ import annotations

import torch

from degtrans.simulate.isp import ISPParams, apply_ccm, gamma_expansion, inverse_smoothstep, process


def _srgb_curves():
    # Imported here: degtrans.restore.baselines imports this package (psf_to_otf).
    from degtrans.restore.baselines import linear_to_srgb, srgb_to_linear

    return srgb_to_linear, linear_to_srgb


def to_linear(image: torch.Tensor, isp: torch.Tensor | None = None) -> torch.Tensor:
    """Processed ``image (B, 3, H, W)`` in [0, 1] -> linear camera RGB (the raw sensor's units).

    The exact inverse of :func:`degtrans.simulate.isp.process` for the pair's ``isp (B, 12)``; the
    inverse sRGB curve when ``isp`` is ``None``.
    """
    if isp is None:
        return _srgb_curves()[0](image)
    params = ISPParams.from_vector(isp.to(image.dtype))
    x = apply_ccm(gamma_expansion(inverse_smoothstep(image)), params.rgb2cam)
    ones = torch.ones_like(params.red_gain)
    gains = torch.stack([params.red_gain, ones, params.blue_gain], dim=1) * params.rgb_gain[:, None]
    return x / gains[:, :, None, None]


def to_display(linear: torch.Tensor, isp: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`to_linear`: the simulation's ISP (or the sRGB curve), values in [0, 1]."""
    if isp is None:
        return _srgb_curves()[1](linear)
    return process(linear, ISPParams.from_vector(isp.to(linear.dtype)))


def estimate_noise(linear: torch.Tensor) -> torch.Tensor:
    """Read-noise variance of ``linear (B, C, H, W)`` from its finest diagonal Haar band (Donoho's MAD).

    Returns:
        (B, 2) ``(shot, read)`` with ``shot = 0``: for images whose noise level is not given.
    """
    x = linear[..., : linear.shape[-2] // 2 * 2, : linear.shape[-1] // 2 * 2]
    band = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    sigma = band.flatten(1).abs().median(dim=1).values / 0.6745
    return torch.stack([torch.zeros_like(sigma), sigma**2], dim=1)


def noise_variance(linear: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-pixel variance ``shot * x + read`` (B, C, H, W) of ``linear`` for ``noise (B, 2)``."""
    shot, read = noise.to(linear.dtype).unbind(1)
    return shot[:, None, None, None] * linear.clamp(min=0.0) + read[:, None, None, None]
