"""Deep Wiener deconvolution (Dong et al. 2020) with the PSF of the patch's position in the field.

A shallow encoder lifts each colour channel to ``m / C`` feature channels (grouped convolutions, so
every feature belongs to one colour channel and is deconvolved with that channel's PSF; the first
feature of each channel is the channel itself, so an untrained model is a classical Wiener filter);
each is deconvolved in the Fourier domain

    F⁻¹(η_i · conj(F(k)) / (|F(k)|² + Σ_j φ_ij |F(p_j)|²) · F(feature_i)),

with fixed derivative filters ``p_j`` and a 1/SNR ``φ`` predicted from the degraded patch; a UNet
decoder refines the result. Features are extended symmetrically to twice their size before the
FFT, so the periodic extension has no jumps at the patch borders and the FFT does not ring.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from degtrans.restore.models.blocks import ConvBlock, FOVBlock, pad_to_multiple

# Horizontal and vertical first differences: the classical Wiener/Tikhonov smoothness priors.
DERIVATIVE_FILTERS = torch.tensor(
    [
        [[0.0, 0.0, 0.0], [0.0, -1.0, 1.0], [0.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 1.0, 0.0]],
    ]
)


def psf_to_otf(psf: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Optical transfer function of centred kernels ``psf: (..., k, k)`` on a ``height x width`` grid.

    Returns:
        (..., height, width // 2 + 1) complex ``rfft2`` of the kernel with its centre moved to (0, 0).
    """
    k = psf.shape[-1]
    if k > height or k > width:
        raise ValueError(f"psf_to_otf: kernel of size {k} does not fit a {height}x{width} grid")
    padded = F.pad(psf, (0, width - k, 0, height - k))
    padded = torch.roll(padded, shifts=(-(k // 2), -(k // 2)), dims=(-2, -1))
    return torch.fft.rfft2(padded)


def symmetric_extend(x: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., 2H, 2W) mirror extension: its periodic continuation is continuous."""
    x = torch.cat([x, x.flip(-1)], dim=-1)
    return torch.cat([x, x.flip(-2)], dim=-2)


def wiener_deconv(
    features: torch.Tensor,
    psf: torch.Tensor,
    phi: torch.Tensor,
    eta: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Feature-space Wiener deconvolution with derivative priors.

    Args:
        features: (B, M, H, W).
        psf: (B, M, k, k) the kernel for each feature (non-negative, summing to 1), k <= 2H, 2W.
        phi: (B, M, J) non-negative 1/SNR weight of each derivative filter ``p_j`` (J = 2).
        eta: (M,) or (B, M) output scales, default 1.
        eps: added to the denominator so that ``phi = 0`` with a vanishing OTF stays finite.

    Returns:
        (B, M, H, W) deconvolved features (float32, whatever the input dtype).
    """
    height, width = features.shape[-2:]
    features, psf, phi = features.float(), psf.float(), phi.float()
    extended = symmetric_extend(features)
    eh, ew = extended.shape[-2:]
    otf = psf_to_otf(psf, eh, ew)
    priors = psf_to_otf(DERIVATIVE_FILTERS.to(features.device), eh, ew).abs() ** 2
    regulariser = torch.einsum("bmj,jhw->bmhw", phi, priors)
    gain = otf.conj() / (otf.abs() ** 2 + regulariser + eps)
    out = torch.fft.irfft2(gain * torch.fft.rfft2(extended), s=(eh, ew))[..., :height, :width]
    if eta is not None:
        out = out * (eta.view(1, -1, 1, 1) if eta.dim() == 1 else eta[..., None, None])
    return out


class DeepWiener(nn.Module):
    """Non-blind restoration: feature-space Wiener deconvolution with the local PSF, then a UNet.

    Args:
        channels: image channels C.
        features: m feature channels (a multiple of C).
        width: decoder UNet width.
    """

    needs_psf = True

    def __init__(self, channels: int = 3, features: int = 24, width: int = 32) -> None:
        super().__init__()
        if features % channels or features < 2 * channels:
            raise ValueError(
                f"DeepWiener: features ({features}) must be a multiple of {channels} and >= {2 * channels}"
            )
        self.channels = channels
        self.features = features
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, features - channels, 3, padding=1, groups=channels),
            nn.LeakyReLU(0.1),
            nn.Conv2d(features - channels, features - channels, 3, padding=1, groups=channels),
        )
        j = DERIVATIVE_FILTERS.shape[0]
        self.snr_net = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, features * j),
        )
        # Start from a moderate 1/SNR (softplus(-4) ~ 0.018) rather than a near-inverse filter.
        nn.init.constant_(self.snr_net[-1].bias, -4.0)
        self.eta = nn.Parameter(torch.ones(features))
        self.fov = FOVBlock(features + channels)
        self.enc1 = ConvBlock(features + channels, width)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.enc2 = ConvBlock(2 * width, 2 * width)
        self.up = nn.Conv2d(2 * width, width, 3, padding=1)
        self.dec1 = ConvBlock(2 * width, width)
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, degraded: torch.Tensor, coords: torch.Tensor, psf: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Restore a patch.

        Args:
            degraded: (B, C, H, W) in [0, 1].
            coords: (B, 3, H, W) FOV coordinates.
            psf: (B, C, k, k) the PSF at the patch (``degtrans.restore.data.patch_psfs``).

        Returns:
            (B, C, H, W) restored patch.
        """
        if psf is None:
            raise ValueError("DeepWiener needs the patch PSF: call model(degraded, coords, psf)")
        batch = degraded.shape[0]
        per_channel = self.features // self.channels
        # Features 0..C-1 are the image channels, then (per_channel - 1) learned features per channel.
        feats = torch.cat([degraded, self.encoder(degraded)], dim=1)
        psf = psf.to(degraded.dtype)
        feature_psf = torch.cat([psf, psf.repeat_interleave(per_channel - 1, dim=1)], dim=1)
        phi = F.softplus(self.snr_net(degraded)).view(batch, self.features, -1)
        with torch.autocast(device_type=degraded.device.type, enabled=False):
            deconv = wiener_deconv(feats, feature_psf, phi, self.eta)
        deconv = deconv.to(degraded.dtype)
        base = deconv[:, : self.channels]
        x, (height, width) = pad_to_multiple(torch.cat([deconv, degraded], dim=1), 2)
        c, _ = pad_to_multiple(coords.to(x.dtype), 2)
        f1 = self.enc1(self.fov(x, c))
        f2 = self.enc2(F.leaky_relu(self.down(f1), 0.1))
        up = F.interpolate(f2, size=f1.shape[-2:], mode="bilinear", align_corners=False)
        f = self.dec1(torch.cat([F.leaky_relu(self.up(up), 0.1), f1], dim=1))
        return base + self.out(f)[..., :height, :width]
