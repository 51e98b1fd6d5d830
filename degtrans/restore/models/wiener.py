"""Deep Wiener deconvolution (Dong et al. 2020) where the PSF acts, with the pair's noise level.

The degraded patch goes to linear camera RGB (:mod:`~degtrans.restore.models.domain`: the pair's ISP
draw, or the sRGB curve); a shallow encoder lifts each colour channel to ``m / C`` feature channels
(grouped convolutions, so every feature belongs to one colour channel and is deconvolved with that
channel's PSF; the first feature of each channel is the channel itself); each is deconvolved in the
Fourier domain

    F⁻¹(η_i · conj(F(k)) / (|F(k)|² + Σ_b φ_ib w_b(ω) (|F(∂x)|² + |F(∂y)|²)) · F(feature_i)),

a gradient (1/f² spectrum) prior whose 1/SNR ``φ`` is given per feature and frequency band ``w_b``.
``φ`` starts at the classical value, noise variance over gradient variance, from the pair's
``noise`` (shot and read variances; estimated from the image when not given), and a small network
predicts a per-band correction from the image and that noise level (zero at initialisation, so an
untrained model is a noise-tuned Wiener filter in linear light). The PSF varies across the patch:
with the PSFs at the patch's four corners the deconvolutions are blended by bilinear weights. A UNet
decoder, told the per-pixel noise level and the FOV coordinates, refines the result in the display
domain. Features are extended symmetrically to twice their size before the FFT, so the periodic
extension has no jumps at the patch borders and the FFT does not ring.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from degtrans.errors import InputError
from degtrans.kernels.spectral import psf_to_otf, symmetric_extend
from degtrans.restore.models.blocks import ConvBlock, FOVBlock, pad_to_multiple
from degtrans.restore.models.domain import to_display, to_linear
from degtrans.simulate.noise import NoiseParams, estimate_noise_variance, noise_variance

# Horizontal and vertical first differences: the classical Wiener/Tikhonov smoothness prior.
DERIVATIVE_FILTERS = torch.tensor(
    [
        [[0.0, 0.0, 0.0], [0.0, -1.0, 1.0], [0.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 1.0, 0.0]],
    ]
)
# Bounds of the learned log-correction of the 1/SNR (e^±8: wide, but never a division by ~0).
MAX_LOG_CORRECTION = 8.0
# Added to the Fourier filters' denominators, so that a zero prior weight with a vanishing OTF stays finite.
EPS = 1e-8


def frequency_bands(height: int, width: int, bands: int, device: torch.device | None = None) -> torch.Tensor:
    """(bands, height, width // 2 + 1) hat functions of the radial frequency on an ``rfft2`` grid.

    Centres are equally spaced from 0 to the corner frequency; the bands sum to 1 everywhere.
    """
    fy = torch.fft.fftfreq(height, device=device).abs()[:, None]
    fx = torch.fft.rfftfreq(width, device=device)[None, :]
    radius = torch.sqrt(fy**2 + fx**2) / math.sqrt(0.5)
    if bands == 1:
        return torch.ones(1, *radius.shape, device=device)
    centres = torch.linspace(0.0, 1.0, bands, device=device)
    return (1.0 - (radius[None] - centres[:, None, None]).abs() * (bands - 1)).clamp(min=0.0)


def corner_weights(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, 4, H, W) bilinear weights of the PSFs at the corners (top-left, top-right, bottom-left,
    bottom-right) of a patch, 1 at each corner pixel (``degtrans.restore.data.patch_corner_psfs``)."""
    v = torch.linspace(0.0, 1.0, height, device=device)[:, None]
    u = torch.linspace(0.0, 1.0, width, device=device)[None, :]
    return torch.stack([(1 - v) * (1 - u), (1 - v) * u, v * (1 - u), v * u])[None]


def _blend_per_psf(
    filtered: Callable[[torch.Tensor], torch.Tensor],
    psf: torch.Tensor,
    weights: torch.Tensor | None,
    height: int,
    width: int,
    psf_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Σ_t weights_t · F⁻¹(filtered(OTF_t))`` cropped to ``height x width``: one Fourier-domain filter per
    PSF on the mirror-extended (2H x 2W) grid, the results blended across the patch.

    Args:
        filtered: the filtered ``rfft2`` spectrum for one OTF (B, M, 2H, W + 1).
        psf: (B, M, k, k) or (B, T, M, k, k); weights: (B or 1, T, H, W), required when T > 1.
        psf_index: (M,) the PSF of each of M outputs, when fewer PSFs than outputs are given (each OTF
            is then computed once, not once per output).
    """
    psf = psf.float()
    if psf.dim() == 4:
        psf = psf[:, None]
    if psf.shape[1] > 1 and weights is None:
        raise ValueError(f"{psf.shape[1]} PSFs need blending weights")
    out = None
    for t in range(psf.shape[1]):
        otf = psf_to_otf(psf[:, t], 2 * height, 2 * width)
        otf = otf if psf_index is None else otf[:, psf_index]
        result = torch.fft.irfft2(filtered(otf), s=(2 * height, 2 * width))[..., :height, :width]
        result = result if weights is None else weights[:, t : t + 1].float() * result
        out = result if out is None else out + result
    return out


def wiener_deconv(
    features: torch.Tensor,
    psf: torch.Tensor,
    phi: torch.Tensor,
    eta: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    psf_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Feature-space Wiener deconvolution with a banded gradient prior.

    Args:
        features: (B, M, H, W).
        psf: (B, M, k, k) one kernel per feature, or (B, T, M, k, k) T kernels whose deconvolutions
            are blended by ``weights`` (non-negative, summing to 1), k <= 2H, 2W. With ``psf_index``
            (M,): (B, P, k, k) or (B, T, P, k, k), feature i deconvolved with PSF ``psf_index[i]``.
        phi: (B, M, J) non-negative 1/SNR of the gradient prior in each of J frequency bands
            (:func:`frequency_bands`; J = 1: one value for all frequencies).
        eta: (M,) output scales, default 1.
        weights: (B or 1, T, H, W) blending weights; required when T > 1.

    Returns:
        (B, M, H, W) deconvolved features (float32, whatever the input dtype).
    """
    features, phi = features.float(), phi.float()
    height, width = features.shape[-2:]
    spectrum = torch.fft.rfft2(symmetric_extend(features))
    eh, ew = 2 * height, 2 * width
    prior = (psf_to_otf(DERIVATIVE_FILTERS.to(features.device), eh, ew).abs() ** 2).sum(0)
    bands = frequency_bands(eh, ew, phi.shape[-1], features.device) * prior
    regulariser = torch.einsum("bmj,jhw->bmhw", phi, bands)

    def filtered(otf: torch.Tensor) -> torch.Tensor:
        # The real gain 1 / (|K|² + reg) once, then complex products: cheaper than a complex division.
        gain = 1.0 / (otf.real.square() + otf.imag.square() + regulariser + EPS)
        return spectrum * torch.complex(otf.real * gain, -otf.imag * gain)

    out = _blend_per_psf(filtered, psf, weights, height, width, psf_index)
    if eta is not None:
        out = out * eta.view(1, -1, 1, 1)
    return out


def gradient_prior_phi(linear: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Classical 1/SNR of the gradient prior per channel: noise variance over gradient variance.

    The gradient variance is the degraded image's own: the blur lowers it about as much as the noise
    raises it. Measured on simulated pairs (phone-wide lens, 64-px patches): this start is 2.4 dB
    above the input; subtracting the noise's share (demosaicking correlates the noise, so its share
    is not ``2 * variance``) or scaling the ratio by 0.3 or 2 starts lower.

    Args:
        linear: (B, C, H, W) the degraded image in linear units; variance: (B, C, H, W) its noise variance.

    Returns:
        (B, C) ``mean(variance) / mean(gradient^2)``.
    """
    dx = linear[..., :, 1:] - linear[..., :, :-1]
    dy = linear[..., 1:, :] - linear[..., :-1, :]
    gradient = 0.5 * (dx.square().mean(dim=(-2, -1)) + dy.square().mean(dim=(-2, -1)))
    return variance.mean(dim=(-2, -1)).clamp(min=1e-10) / gradient.clamp(min=1e-10)


def data_consistency(
    observed: torch.Tensor,
    estimate: torch.Tensor,
    psf: torch.Tensor,
    rho: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The image closest to ``estimate`` that explains ``observed``: ``argmin |k * x - y|² + ρ |x - z|²``.

    ``F⁻¹((conj(F(k)) F(y) + ρ F(z)) / (|F(k)|² + ρ))`` per PSF, mirror-extended as
    :func:`wiener_deconv`; the half-quadratic-splitting step that puts back what a denoiser's estimate
    ``z`` lost but the observation ``y`` still holds.

    Args:
        observed, estimate: (B, C, H, W) linear images y and z.
        psf: (B, C, k, k) or (B, T, C, k, k) blended by ``weights`` (B or 1, T, H, W).
        rho: (B, C) non-negative weight of the estimate (0 when the pairs were simulated noise-free).

    Returns:
        (B, C, H, W) float32.
    """
    height, width = observed.shape[-2:]
    observed_spectrum = torch.fft.rfft2(symmetric_extend(observed.float()))
    estimate_spectrum = torch.fft.rfft2(symmetric_extend(estimate.float()))
    rho = rho.float()[..., None, None]

    def filtered(otf: torch.Tensor) -> torch.Tensor:
        gain = 1.0 / (otf.real.square() + otf.imag.square() + rho + EPS)  # real: no complex division
        return (otf.conj() * observed_spectrum + rho * estimate_spectrum) * gain

    return _blend_per_psf(filtered, psf, weights, height, width)


class RefineUNet(nn.Module):
    """FOV-modulated UNet predicting a residual image, zero at initialisation.

    Args:
        channels_in: input channels; channels_out: residual channels.
        width: channels at full resolution; levels: resolutions (each halves the one above and
            doubles its width).
    """

    def __init__(self, channels_in: int, channels_out: int, width: int, levels: int) -> None:
        super().__init__()
        self.levels = levels
        self.fov = FOVBlock(channels_in)
        self.enc1 = ConvBlock(channels_in, width)
        widths = [width * 2**level for level in range(levels)]
        pairs = list(zip(widths[:-1], widths[1:], strict=True))
        # Level l + 1 halves level l's resolution; its decoder joins the upsampled coarser level to the skip.
        self.down = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in pairs)
        self.enc = nn.ModuleList(ConvBlock(b, b) for _, b in pairs)
        self.up = nn.ModuleList(nn.Conv2d(b, a, 3, padding=1) for a, b in pairs)
        self.dec = nn.ModuleList(ConvBlock(2 * a, a) for a in widths[:-1])
        self.out = nn.Conv2d(width, channels_out, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """x: (B, channels_in, H, W), coords: (B, 3, H, W) -> (B, channels_out, H, W)."""
        x, c, (height, width) = pad_to_multiple(x, coords, 2 ** (self.levels - 1))
        skips = [self.enc1(self.fov(x, c))]
        for down, enc in zip(self.down, self.enc, strict=True):
            skips.append(enc(F.leaky_relu(down(skips[-1]), 0.1)))
        f = skips.pop()
        for up, dec in zip(reversed(self.up), reversed(self.dec), strict=True):
            skip = skips.pop()
            f = F.interpolate(f, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            f = dec(torch.cat([F.leaky_relu(up(f), 0.1), skip], dim=1))
        return self.out(f)[..., :height, :width]


# Floor of the noise standard deviation the network is told (linear units): below 8-bit quantisation.
MIN_NOISE_STD = 1e-6
# Start of the data-consistency weight's prior: the refined estimate's error variance (linear units).
ESTIMATE_VARIANCE = 1e-3
ESTIMATE_MARGIN = 1e-4


class DeepWiener(nn.Module):
    """Non-blind restoration: noise-aware feature-space Wiener deconvolution with the local PSFs, then a UNet.

    Args:
        channels: image channels C.
        features: m feature channels (a multiple of C).
        width: refinement UNet width at full resolution.
        bands: frequency bands of the learned 1/SNR.
        known_isp: use the ``noise`` and ``isp`` given to :meth:`forward`; False ignores them (sRGB
            curve, noise estimated from the image), so that training matches photographs, which
            have neither.
        levels: levels of the refinement UNet (each halves the resolution and doubles the width).
        stages: refinement stages. Each after the first is a half-quadratic-splitting step: the
            previous estimate ``z`` is made consistent with the observation
            (:func:`data_consistency`, weight ρ = noise variance / a learned error variance), and a
            further UNet, given both, corrects ``z`` (from zero: an untrained stage changes nothing).
    """

    needs_psf = True

    def __init__(
        self,
        channels: int = 3,
        features: int = 24,
        width: int = 32,
        bands: int = 4,
        known_isp: bool = True,
        levels: int = 2,
        stages: int = 1,
    ) -> None:
        super().__init__()
        if features % channels or features < 2 * channels:
            raise InputError(
                f"DeepWiener: features (train.wiener.features: {features}) must be a multiple of {channels}"
                f" and >= {2 * channels}"
            )
        if bands < 1:
            raise InputError(f"DeepWiener: bands (train.wiener.bands) must be >= 1, got {bands}")
        if levels < 1 or stages < 1:
            raise InputError(
                f"DeepWiener: levels and stages (train.wiener.levels, train.wiener.stages) must be >= 1,"
                f" got {levels} and {stages}"
            )
        self.channels, self.features = channels, features
        self.known_isp = known_isp
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, features - channels, 3, padding=1, groups=channels),
            nn.LeakyReLU(0.1),
            nn.Conv2d(features - channels, features - channels, 3, padding=1, groups=channels),
        )
        # Per-feature, per-band log-corrections of the classical 1/SNR, from the image, its noise map and
        # the classical value; zero-initialised, so training starts from the noise-tuned filter.
        self.snr_features = nn.Sequential(
            nn.Conv2d(channels + 1, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.snr_head = nn.Linear(width + channels + 1, features * bands)
        nn.init.zeros_(self.snr_head.weight)
        nn.init.zeros_(self.snr_head.bias)
        self.eta = nn.Parameter(torch.ones(features))
        # Stage 1 sees the deconvolved features; later ones their data-consistent estimate and the last one.
        stage_in = [features + channels + 1] + [3 * channels + 1] * (stages - 1)
        self.refine = nn.ModuleList(RefineUNet(n, channels, width, levels) for n in stage_in)
        self.log_estimate_variance = (
            nn.Parameter(torch.full((stages - 1,), math.log(ESTIMATE_VARIANCE))) if stages > 1 else None
        )

    def snr(self, linear: torch.Tensor, variance: torch.Tensor, noise_std: torch.Tensor) -> torch.Tensor:
        """(B, M, bands) 1/SNR: the classical value of each feature's channel times a learned correction."""
        batch = linear.shape[0]
        phi0 = gradient_prior_phi(linear, variance)
        stats = torch.cat([phi0.log(), noise_std.flatten(1).mean(1, keepdim=True).log()], dim=1)
        relative_noise = noise_std / noise_std.mean((-2, -1), keepdim=True)
        pooled = self.snr_features(torch.cat([linear, relative_noise], dim=1))
        correction = self.snr_head(torch.cat([pooled, stats], dim=1)).view(batch, self.features, -1)
        phi0 = phi0.repeat_interleave(self.features // self.channels, dim=1)
        return phi0[..., None] * correction.clamp(-MAX_LOG_CORRECTION, MAX_LOG_CORRECTION).exp()

    def forward(
        self,
        degraded: torch.Tensor,
        coords: torch.Tensor,
        psf: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        isp: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Restore a patch.

        Args:
            degraded: (B, C, H, W) in [0, 1].
            coords: (B, 3, H, W) FOV coordinates.
            psf: (B, C, k, k) the PSF at the patch centre (``degtrans.restore.data.patch_psfs``) or
                (B, 4, C, k, k) at its corners (``patch_corner_psfs``), blended across the patch.
            noise: (B, 2) ``(shot, read)`` noise variances in linear units; estimated when ``None``
                (or when the model was built with ``known_isp=False``).
            isp: (B, 12) the pair's ISP draw (``degtrans.pairs.ISP_COLUMNS``); ``None``: sRGB.

        Returns:
            (B, C, H, W) restored patch.
        """
        if psf is None:
            raise ValueError("DeepWiener needs the patch PSF: call model(degraded, coords, psf)")
        if psf.dim() == 5 and psf.shape[1] not in (1, 4):
            raise ValueError(f"DeepWiener: psf must be (B, C, k, k) or (B, 4, C, k, k): {tuple(psf.shape)}")
        if not self.known_isp:
            noise = isp = None
        height, width = degraded.shape[-2:]
        per_channel = self.features // self.channels
        with torch.autocast(device_type=degraded.device.type, enabled=False):
            linear = to_linear(degraded.float(), isp)
            if noise is None:  # shot noise unknown: all of it read noise
                read = estimate_noise_variance(linear)
                params = NoiseParams(torch.zeros_like(read), read)
            else:
                params = NoiseParams(*noise.unbind(1))
            variance = noise_variance(linear, params)
            # Floored: a noise level estimated from a clipped or flat patch is 0, and its log and the
            # relative noise map (0 / 0) were NaN.
            noise_std = variance.mean(dim=1, keepdim=True).sqrt().clamp(min=MIN_NOISE_STD)
            # Features 0..C-1 are the image channels, then (per_channel - 1) learned features per channel.
            feats = torch.cat([linear, self.encoder(linear)], dim=1)
            psf = psf.float()
            # Feature i is deconvolved with its colour channel's PSF.
            psf_index = torch.arange(self.channels, device=psf.device)
            psf_index = torch.cat([psf_index, psf_index.repeat_interleave(per_channel - 1)])
            phi = self.snr(linear, variance, noise_std)
            corners = psf.dim() == 5 and psf.shape[1] == 4
            weights = corner_weights(height, width, degraded.device) if corners else None
            deconv = wiener_deconv(feats, psf, phi, self.eta, weights, psf_index=psf_index)
            base = to_display(deconv[:, : self.channels], isp)
        # The noise level as a feature map: log10 of the standard deviation, 1e-4 -> 0 and 1 -> 1.
        noise_level = noise_std.log10() / 4.0 + 1.0
        refine = torch.cat([base, deconv[:, self.channels :], degraded, noise_level], dim=1)
        restored = base + self.refine[0](refine.to(degraded.dtype), coords)
        for index, stage in enumerate(self.refine[1:]):
            with torch.autocast(device_type=degraded.device.type, enabled=False):
                # Inside (0, 1): the inverse tone curve's asin has an infinite slope at 0 and 1.
                estimate = to_linear(restored.float().clamp(ESTIMATE_MARGIN, 1.0 - ESTIMATE_MARGIN), isp)
                rho = variance.mean(dim=(-2, -1)) / self.log_estimate_variance[index].exp()
                consistent = to_display(data_consistency(linear, estimate, psf, rho, weights), isp)
            inputs = torch.cat([consistent, restored, degraded, noise_level], dim=1).to(degraded.dtype)
            restored = restored + stage(inputs, coords)
        return restored
