"""The calibration report PNG: PSF grid, per-tile fit residual, and photo / re-blurred / target crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from degtrans.calibrate.accuracy import format_metrics
from degtrans.calibrate.fit import FitProblem
from degtrans.calibrate.inspect import psf_mosaic
from degtrans.field import PSFField
from degtrans.figures import pyplot, save_figure


def draw_report(field: PSFField, problem: FitProblem, path: str | Path, pair: int = 0) -> Path:
    """Write the report PNG for ``field`` fitted on ``problem`` (crops from pair ``pair``)."""
    plt = pyplot()
    rows, cols = field.grid
    height, width = field.image_size
    tiles = field.meta.get("tiles", {})
    residual = np.full((rows, cols), np.nan)
    if tiles:
        residual = np.array(
            [[np.nan if v is None else v for v in row] for row in tiles["residual"]], np.float64
        )
    filled = np.array(tiles.get("filled_from_neighbours", np.zeros((rows, cols), bool)))
    target = problem.targets[pair]
    blurred = field.blur(target, layout="chw")
    photo = problem.photos[pair]

    fig = plt.figure(figsize=(13, 9), constrained_layout=True)
    grid = fig.add_gridspec(2, 3, height_ratios=[1.1, 1])
    ax = fig.add_subplot(grid[0, :2])
    ax.imshow(psf_mosaic(field.psfs), interpolation="nearest")
    ax.set_title(f"recovered PSFs ({rows}x{cols}, k={field.kernel_size}, peak-normalised, gamma 0.5)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax = fig.add_subplot(grid[0, 2])
    heat = ax.imshow(residual * 1e3, cmap="viridis", interpolation="nearest")
    for r in range(rows):
        for c in range(cols):
            label = "filled" if filled.size and bool(filled[r, c]) else f"{residual[r, c] * 1e3:.2f}"
            ax.text(c, r, label, ha="center", va="center", fontsize=7, color="white")
    ax.set_title("fit residual per tile (RMS error x1e3)")
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    fig.colorbar(heat, ax=ax, shrink=0.7)

    sub = grid[1, :].subgridspec(1, 3)
    shown = [("centre", (rows // 2, cols // 2)), ("edge", (rows // 2, 0)), ("corner", (0, 0))]
    for index, (label, (r, c)) in enumerate(shown):
        cy, cx = field.tile_centre(r, c)
        half = max(8, min(height // rows, width // cols) // 2)
        y0 = int(np.clip(cy - half, 0, height - 2 * half))
        x0 = int(np.clip(cx - half, 0, width - 2 * half))
        window = (slice(None), slice(y0, y0 + 2 * half), slice(x0, x0 + 2 * half))
        strip = np.concatenate([photo[window], blurred[window], target[window]], axis=2)
        ax = fig.add_subplot(sub[0, index])
        ax.imshow(np.clip(strip.transpose(1, 2, 0), 0, 1), interpolation="nearest")
        ax.set_title(f"{label} tile ({r},{c}): photo | target re-blurred | target", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    metrics = format_metrics(field.meta.get("metrics", {}))
    title = f"calibration report: {field.camera}  ({height}x{width} px, pair {problem.names[pair]})"
    fig.suptitle(title + ("\n" + metrics if metrics else ""), fontsize=9 if metrics else None)
    return save_figure(fig, path, dpi=100)
