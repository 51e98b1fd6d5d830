"""FOV-KPN (Chen et al. 2021): a blind restoration UNet told where on the sensor each pixel is.

The degraded patch and its FOV coordinates enter a 4-scale UNet; a FOV block modulates the
features by the coordinates at every scale; deformable residual blocks (DCNv2) sit in the
bottleneck; a kernel-prediction head predicts one ``k x k`` kernel per pixel and channel, applied
to the input with :func:`degtrans.kernels.apply_pixel_kernels`, plus a residual image. The head is
initialised to the identity kernel (and a zero residual), so an untrained network returns its input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from degtrans.kernels import apply_pixel_kernels
from degtrans.restore.models.blocks import ConvBlock, FOVBlock, pad_to_multiple
from degtrans.restore.models.deform import DeformResBlock

SCALES = 4
WIDTH_MULTIPLIERS = (1, 2, 4, 4)
KERNEL_SCALE = 0.01


class FOVKPN(nn.Module):
    """Blind FOV-aware kernel-prediction network.

    Args:
        channels: image channels.
        width: feature channels at full resolution (the widths are ``width * (1, 2, 4, 4)``).
        offset_channels: feature channels of each DCNv2 offset branch.
        kernel_size: predicted per-pixel kernel size k (odd).
        deform_blocks: deformable residual blocks in the bottleneck.
    """

    needs_psf = False

    def __init__(
        self,
        channels: int = 3,
        width: int = 32,
        offset_channels: int = 32,
        kernel_size: int = 5,
        deform_blocks: int = 2,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"FOVKPN: kernel_size must be odd, got {kernel_size}")
        self.channels = channels
        self.kernel_size = kernel_size
        widths = [width * m for m in WIDTH_MULTIPLIERS]
        self.head = nn.Conv2d(channels + 3, widths[0], 3, padding=1)
        self.encoders = nn.ModuleList(
            ConvBlock(widths[i - 1] if i else widths[0], widths[i]) for i in range(SCALES)
        )
        self.downs = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i], 3, stride=2, padding=1) for i in range(SCALES - 1)
        )
        self.enc_fov = nn.ModuleList(FOVBlock(w) for w in widths)
        self.bottleneck = nn.Sequential(
            *(DeformResBlock(widths[-1], offset_channels) for _ in range(deform_blocks))
        )
        self.ups = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1) for i in range(SCALES - 1))
        self.decoders = nn.ModuleList(ConvBlock(2 * widths[i], widths[i]) for i in range(SCALES - 1))
        self.dec_fov = nn.ModuleList(FOVBlock(widths[i]) for i in range(SCALES - 1))
        taps = kernel_size * kernel_size
        self.kernel_head = nn.Conv2d(widths[0], channels * taps, 3, padding=1)
        self.residual_head = nn.Conv2d(widths[0], channels, 3, padding=1)
        nn.init.zeros_(self.kernel_head.weight)
        nn.init.zeros_(self.kernel_head.bias)
        identity = torch.zeros(channels, taps, 1, 1)
        identity[:, taps // 2] = 1.0
        self.register_buffer("identity_kernel", identity, persistent=False)
        nn.init.zeros_(self.residual_head.weight)
        nn.init.zeros_(self.residual_head.bias)

    def forward(
        self, degraded: torch.Tensor, coords: torch.Tensor, psf: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Restore a patch.

        Args:
            degraded: (B, C, H, W) in [0, 1]; any H, W (padded internally to multiples of 8).
            coords: (B, 3, H, W) ``(x, y, r)`` from :func:`degtrans.restore.coords.fov_coords`.
            psf: ignored (blind model); accepted so every model has the same call.

        Returns:
            (B, C, H, W) restored patch.
        """
        multiple = 2 ** (SCALES - 1)
        x, (height, width) = pad_to_multiple(degraded, multiple)
        c, _ = pad_to_multiple(coords.to(x.dtype), multiple)
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
        batch, _, ph, pw = x.shape
        # Kernels are the identity plus a damped correction: the kernel multiplies the image, and an
        # undamped head makes early training oscillate (it overfits 4 patches several times slower).
        correction = self.kernel_head(f).view(batch, self.channels, self.kernel_size**2, ph, pw)
        kernels = self.identity_kernel + KERNEL_SCALE * correction
        out = apply_pixel_kernels(x, kernels, padding="reflect") + self.residual_head(f)
        return out[..., :height, :width]
