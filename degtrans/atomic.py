"""Atomic file writes: a temporary name in the same folder, then a rename, so a reader never sees a
half-written file that looks complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically, readable by all (0644)."""
    path = Path(path)
    # Named ".NAME.XXXX.tmp": no reader's glob for NAME's suffix sees the half-written file.
    with atomic_path(path, prefix=f".{path.name}.", suffix=".tmp") as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


@contextmanager
def atomic_path(
    path: str | os.PathLike, prefix: str | None = None, suffix: str | None = None
) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so writers that read it pick the format) for a
    writer that needs a file name (``torch.save``, matplotlib, CSV, OpenCV); renamed to ``path``
    (0644) when the block ends without error, removed otherwise. ``prefix``, ``suffix``: the
    temporary name's, if not ``.STEM.`` and ``path``'s suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=prefix or f".{path.stem}.", suffix=suffix or path.suffix or ".tmp"
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; outputs are for reading
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
