"""A picture of a synthesised dataset: clean / degraded pairs side by side, with their sensor position."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def draw_pairs(dataset: str | Path, png: str | Path, count: int = 6) -> Path:
    """Draw the first ``count`` rows of the dataset's first shard as clean | degraded columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset, png = Path(dataset), Path(png)
    manifest = json.loads((dataset / "manifest.json").read_text())
    if not manifest["shards"]:
        raise ValueError(f"{dataset}: the dataset has no shards")
    table = pq.read_table(dataset / manifest["shards"][0]["path"]).slice(0, count)
    rows = table.to_pylist()
    fig, axes = plt.subplots(len(rows), 2, figsize=(6, 3 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows, strict=True):
        shape = (row["height"], row["width"], row["channels"])
        for ax, name in zip(ax_row, ("clean", "degraded"), strict=True):
            ax.imshow(np.asarray(row[name], np.uint16).reshape(shape) / 65535.0)
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_ylabel(
            f"{row['sample_id']}\n(y0, x0) = ({row['y0']}, {row['x0']})\n"
            f"frame {row['frame_h']}x{row['frame_w']}",
            fontsize=8,
        )
        ax_row[1].set_title(f"shot {row['noise_shot']:.1e}, read {row['noise_read']:.1e}", fontsize=8)
    axes[0, 0].set_title("clean", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
