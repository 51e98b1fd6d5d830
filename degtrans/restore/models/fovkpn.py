"""FOV-KPN (Chen et al. 2021): a blind restoration UNet told where on the sensor each pixel is.

The degraded patch and its FOV coordinates enter a 4-scale UNet; a FOV block modulates the
features by the coordinates at every scale; deformable residual blocks (DCNv2, offset groups) sit in
the bottleneck and at every decoder level; the kernel-prediction head predicts ``k x k`` kernels per
pixel and channel at dilations 1-4 (17x17 support for k = 5), applies them to the input and fuses the
results with a 3x3 convolution (:class:`~degtrans.restore.models.kpn.MultiDilationKPN`), plus a
residual image. The head starts as the identity (and the residual at zero), so an untrained network
returns its input.
"""

from __future__ import annotations

from math import gcd

import torch
import torch.nn.functional as F
from torch import nn

from degtrans.restore.models.blocks import ConvBlock, FOVBlock, pad_to_multiple
from degtrans.restore.models.deform import DeformResBlock
from degtrans.restore.models.kpn import MultiDilationKPN

SCALES = 4
WIDTH_MULTIPLIERS = (1, 2, 4, 4)


class FOVKPN(nn.Module):
    """Blind FOV-aware kernel-prediction network.

    Args:
        channels: image channels.
        width: feature channels at full resolution (the widths are ``width * (1, 2, 4, 4)``); the
            reference uses 32, CPU runs 16.
        offset_channels: feature channels of each DCNv2 offset branch.
        kernel_size: predicted per-pixel kernel size k (odd).
        deform_blocks: deformable residual blocks in the bottleneck.
        offset_groups: DCNv2 offset groups (the reference uses 8); a level with fewer channels uses
            ``gcd(offset_groups, channels)``, so tiny test networks stay valid.
        dilations: dilations of the predicted kernels.
        kernel_scale: factor on the predicted kernel correction (1: undamped).
        decoder_deform: decoder levels, from the coarsest, with a deformable residual block (3: every
            level, as the reference; fewer saves CPU time, the full-resolution level costs most).
    """

    needs_psf = False

    def __init__(
        self,
        channels: int = 3,
        width: int = 32,
        offset_channels: int = 32,
        kernel_size: int = 5,
        deform_blocks: int = 2,
        offset_groups: int = 8,
        dilations: tuple[int, ...] = (1, 2, 3, 4),
        kernel_scale: float = 1.0,
        decoder_deform: int = SCALES - 1,
    ) -> None:
        super().__init__()
        widths = [width * m for m in WIDTH_MULTIPLIERS]
        self.head = nn.Conv2d(channels + 3, widths[0], 3, padding=1)
        self.encoders = nn.ModuleList(
            ConvBlock(widths[i - 1] if i else widths[0], widths[i]) for i in range(SCALES)
        )
        self.downs = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i], 3, stride=2, padding=1) for i in range(SCALES - 1)
        )
        self.enc_fov = nn.ModuleList(FOVBlock(w) for w in widths)

        def deform_block(channels: int) -> DeformResBlock:
            return DeformResBlock(channels, offset_channels, gcd(offset_groups, channels))

        self.bottleneck = nn.Sequential(*(deform_block(widths[-1]) for _ in range(deform_blocks)))
        self.ups = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1) for i in range(SCALES - 1))
        self.decoders = nn.ModuleList(ConvBlock(2 * widths[i], widths[i]) for i in range(SCALES - 1))
        self.dec_fov = nn.ModuleList(FOVBlock(widths[i]) for i in range(SCALES - 1))
        self.dec_deform = nn.ModuleList(
            deform_block(widths[i]) if i >= SCALES - 1 - decoder_deform else nn.Identity()
            for i in range(SCALES - 1)
        )
        self.kpn = MultiDilationKPN(widths[0], channels, kernel_size, dilations, kernel_scale)
        self.residual_head = nn.Conv2d(widths[0], channels, 3, padding=1)
        nn.init.zeros_(self.residual_head.weight)
        nn.init.zeros_(self.residual_head.bias)

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
            degraded: (B, C, H, W) in [0, 1]; any H, W (padded internally to multiples of 8).
            coords: (B, 3, H, W) ``(x, y, r)`` from :func:`degtrans.restore.coords.fov_coords`.
            psf, noise, isp: ignored (blind model); accepted so every model has the same call.

        Returns:
            (B, C, H, W) restored patch.
        """
        x, c, (height, width) = pad_to_multiple(degraded, coords, 2 ** (SCALES - 1))
        coords_at = [c]
        for _ in range(SCALES - 1):
            coords_at.append(F.avg_pool2d(coords_at[-1], 2))
        f = self.head(torch.cat([x, c], dim=1))
        skips = []
        for i in range(SCALES):
            f = self.enc_fov[i](self.encoders[i](f), coords_at[i])
            if i < SCALES - 1:
                skips.append(f)
                f = F.leaky_relu(self.downs[i](f), 0.1)
        f = self.bottleneck(f)
        for i in reversed(range(SCALES - 1)):
            f = F.interpolate(f, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            f = F.leaky_relu(self.ups[i](f), 0.1)
            f = self.dec_fov[i](self.decoders[i](torch.cat([f, skips[i]], dim=1)), coords_at[i])
            f = self.dec_deform[i](f)
        out = self.kpn(x, f) + self.residual_head(f)
        return out[..., :height, :width]
