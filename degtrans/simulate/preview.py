"""A picture of a synthesised dataset: clean / degraded pairs side by side, with their sensor position."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from degtrans.errors import InputError
from degtrans.figures import pyplot, save_figure
from degtrans.pairs import PIXEL_COLUMNS, decode_u16, read_manifest


def draw_pairs(dataset: str | Path, png: str | Path, count: int = 6) -> Path:
    """Draw the first ``count`` rows of the dataset's first shard as clean | degraded columns."""
    plt = pyplot()
    dataset = Path(dataset)
    manifest = read_manifest(dataset)
    if not manifest["shards"]:
        raise InputError(f"{dataset}: the dataset has no shards")
    table = pq.read_table(dataset / manifest["shards"][0]["path"]).slice(0, count)
    rows = table.to_pylist()
    fig, axes = plt.subplots(len(rows), 2, figsize=(6, 3 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows, strict=True):
        shape = (row["height"], row["width"], row["channels"])
        for ax, name in zip(ax_row, PIXEL_COLUMNS, strict=True):
            ax.imshow(decode_u16([row[name]], shape)[0])
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
    return save_figure(fig, png, dpi=110)
