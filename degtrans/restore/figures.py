"""Matplotlib (Agg) figures written atomically: what a person looks at after training or evaluation."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, png: str | Path, dpi: int = 100) -> Path:
    """Save ``fig`` as ``png`` (temporary name, then rename) and close it."""
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=png.parent, prefix=f".{png.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, png)
    finally:
        pyplot().close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return png
