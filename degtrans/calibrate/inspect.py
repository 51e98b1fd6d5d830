"""Summaries and pictures of a PSF field (``degtrans inspect``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from degtrans.field import PSFField
from degtrans.figures import pyplot, save_figure


def second_moment_radius(psfs: np.ndarray) -> np.ndarray:
    """RMS radius in pixels about the centroid of each PSF ``(..., k, k)`` → ``(...)``."""
    k = psfs.shape[-1]
    coords = np.arange(k, dtype=np.float64) - k // 2
    p = psfs.astype(np.float64)
    total = p.sum(axis=(-1, -2))
    my = (p.sum(-1) * coords).sum(-1) / total
    mx = (p.sum(-2) * coords).sum(-1) / total
    vy = (p.sum(-1) * coords**2).sum(-1) / total - my**2
    vx = (p.sum(-2) * coords**2).sum(-1) / total - mx**2
    return np.sqrt(np.clip(vy + vx, 0.0, None))


def energy_outside_centre(psfs: np.ndarray) -> np.ndarray:
    """Fraction of each PSF's energy outside the central square of half its size."""
    k = psfs.shape[-1]
    half = max(1, k // 4)
    c = k // 2
    inner = psfs[..., c - half : c + half + 1, c - half : c + half + 1].sum(axis=(-1, -2))
    return 1.0 - inner / psfs.sum(axis=(-1, -2))


def summary(field: PSFField) -> str:
    """A small table: grid, k, widths min/median/max, energy outside the central 50 %."""
    widths = second_moment_radius(field.psfs)
    outside = energy_outside_centre(field.psfs)
    rows, cols = field.grid
    lines = [
        f"camera        {field.camera}",
        f"image size    {field.image_size[0]} x {field.image_size[1]} px",
        f"grid          {rows} x {cols} tiles, channels {''.join(field.channels)}, domain {field.domain}",
        f"psf size k    {field.kernel_size}",
        f"{'channel':<8}{'width min':>11}{'median':>9}{'max':>9}{'outside50%':>12}",
    ]
    for index, name in enumerate(field.channels):
        w = widths[:, :, index]
        lines.append(
            f"{name:<8}{w.min():>11.3f}{np.median(w):>9.3f}{w.max():>9.3f}"
            f"{outside[:, :, index].mean():>12.4f}"
        )
    lines.append("(width: second-moment radius in px; outside50%: energy outside the central half)")
    return "\n".join(lines)


def psf_mosaic(psfs: np.ndarray, gap: int = 2, gamma: float = 0.5) -> np.ndarray:
    """Lay PSFs ``(rows, cols, C, k, k)`` out as on the sensor: ``(rows*(k+gap), cols*(k+gap), 3)`` in [0, 1].

    Each PSF is scaled by its own peak and raised to ``gamma`` so faint tails stay visible.
    """
    rows, cols, channels, k, _ = psfs.shape
    cell = k + gap
    canvas = np.ones((rows * cell - gap, cols * cell - gap, 3), dtype=np.float64)
    for r in range(rows):
        for c in range(cols):
            p = psfs[r, c].astype(np.float64)
            p = (p / max(float(p.max()), 1e-12)) ** gamma
            rgb = np.repeat(p[:1], 3, 0) if channels == 1 else p[:3]
            canvas[r * cell : r * cell + k, c * cell : c * cell + k] = np.moveaxis(rgb, 0, -1)
    return canvas


def draw_field(field: PSFField, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG: the PSF grid as on the sensor, and the per-tile width as a heat map beside it."""
    plt = pyplot()
    widths = second_moment_radius(field.psfs).mean(axis=-1)
    rows, cols = field.grid
    fig, (ax_grid, ax_heat) = plt.subplots(
        1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [3, 2]}, constrained_layout=True
    )
    ax_grid.imshow(psf_mosaic(field.psfs), interpolation="nearest")
    ax_grid.set_title(
        f"PSFs ({rows}x{cols} tiles, k={field.kernel_size}, per-PSF peak-normalised, gamma 0.5)"
    )
    ax_grid.set_xticks([])
    ax_grid.set_yticks([])
    heat = ax_heat.imshow(widths, cmap="magma", interpolation="nearest")
    for r in range(rows):
        for c in range(cols):
            ax_heat.text(c, r, f"{widths[r, c]:.2f}", ha="center", va="center", fontsize=7, color="cyan")
    ax_heat.set_title("second-moment radius (px, channel mean)")
    ax_heat.set_xticks(range(cols))
    ax_heat.set_yticks(range(rows))
    fig.colorbar(heat, ax=ax_heat, shrink=0.8)
    fig.suptitle(title or f"{field.camera}  ({field.image_size[0]}x{field.image_size[1]} px)")
    return save_figure(fig, path, dpi=110)


def draw_psf_comparison(truth: PSFField, recovered: PSFField, errors: np.ndarray, png: str | Path) -> Path:
    """Write a PNG: the true and recovered PSF grids side by side, and ``errors`` (rows, cols) per tile."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"width_ratios": [3, 3, 2]})
    for ax, f, title in zip(axes[:2], (truth, recovered), ("true", "recovered"), strict=True):
        ax.imshow(psf_mosaic(f.psfs), interpolation="nearest")
        ax.set_title(f"{title} PSFs")
        ax.axis("off")
    heat = axes[2].imshow(errors, cmap="viridis", vmin=0)
    for (r, c), value in np.ndenumerate(errors):
        axes[2].text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8, color="w")
    axes[2].set_title("relative L2 error per tile")
    fig.colorbar(heat, ax=axes[2], shrink=0.8)
    fig.tight_layout()
    return save_figure(fig, png)
