"""Matplotlib (Agg) figures written atomically: what a person looks at after calibration, synthesis,
training or evaluation. Every stage saves its pictures through ``save_figure``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from degtrans.atomic import atomic_path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, png: str | Path, dpi: int = 100) -> Path:
    """Save ``fig`` as ``png`` (temporary name, then rename) and close it."""
    try:
        with atomic_path(png) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        pyplot().close(fig)
    return Path(png)
