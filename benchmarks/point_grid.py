"""README picture: a grid of point sources blurred by a spatially variant PSF field with ``sv_conv2d``.

Left: the blurred point grid over the whole frame (each point shows the interpolated PSF of its
position: round on axis, wider and radially stretched toward the corners, colour fringes from the
per-channel widths). Right: the tile-centre PSFs of the field itself. Writes ``docs/point_grid.png``.

    .venv/bin/python benchmarks/point_grid.py [--output docs/point_grid.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from degtrans.calibrate.inspect import psf_mosaic  # noqa: E402
from degtrans.figures import save_figure  # noqa: E402
from degtrans.testing.synthetic import gaussian_field  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"


def blurred_point_grid(
    frame: tuple[int, int] = (256, 352), spacing: int = 32, grid: tuple[int, int] = (3, 4), psf_size: int = 25
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) blurred point grid (linear) and the field's (rows, cols, 3, k, k) tile PSFs."""
    field = gaussian_field(
        grid=grid, psf_size=psf_size, image_size=frame, sigma_centre=0.7, sigma_corner=3.5, chromatic=0.3
    )
    points = np.zeros((*frame, 3), np.float32)
    points[spacing // 2 :: spacing, spacing // 2 :: spacing] = 1.0
    blurred = field.blur(points, padding="zeros")
    return blurred, field.psfs


def draw(path: Path) -> Path:
    """Render the picture atomically to ``path`` (PNG)."""
    spacing = 32
    blurred, psfs = blurred_point_grid(spacing=spacing)
    # Each point scaled by its own peak (the wide corner PSFs have low peaks), square-root display so
    # that the faint wings stay visible; every point sits alone in its spacing x spacing cell.
    height, width = blurred.shape[:2]
    cells = blurred.reshape(height // spacing, spacing, width // spacing, spacing, 3)
    cells = cells / cells.max(axis=(1, 3, 4), keepdims=True)
    shown = np.sqrt(np.clip(cells.reshape(blurred.shape), 0.0, 1.0))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.4, 1]})
    axes[0].imshow(shown, interpolation="nearest")
    axes[0].set_title("point grid blurred by sv_conv2d (each point scaled to its peak, sqrt)")
    axes[1].imshow(np.clip(psf_mosaic(psfs), 0.0, 1.0), interpolation="nearest")
    axes[1].set_title(
        f"the field: {psfs.shape[0]}x{psfs.shape[1]} tile-centre PSFs, {psfs.shape[-1]}x{psfs.shape[-1]}"
    )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DOCS / "point_grid.png", help="PNG path")
    args = parser.parse_args()
    print(f"wrote {draw(args.output)}")


if __name__ == "__main__":
    main()
