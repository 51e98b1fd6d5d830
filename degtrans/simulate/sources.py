"""Clean images a dataset is made from: folders, files or Parquet files of encoded images.

Every image's header is read once up front (its frame size enters the plan); pixels are decoded by the
worker that simulates its samples, with the project's one decoder (``degtrans.io``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from degtrans.errors import InputError
from degtrans.io import IMAGE_SUFFIXES, decode_image, image_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """A clean image: ``name`` (unique, used in sample ids), where to read it, its frame size."""

    name: str
    path: str
    row: int | None
    height: int
    width: int

    @property
    def where(self) -> str:
        """The file, or ``file#row`` for a row of a Parquet file (for messages)."""
        return self.path if self.row is None else f"{self.path}#{self.row}"


def bundled_images() -> list[Path]:
    """The small clean photographs shipped with the package (cut from scikit-image's ``data``)."""
    folder = resources.files("degtrans").joinpath("data/images")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES))


def list_images(images: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Image files (and ``.parquet`` files of encoded images) from a folder, a file, or a list of them."""
    items = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in (*IMAGE_SUFFIXES, ".parquet"))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"--images: {path} does not exist")
    if not found:
        raise InputError(f"--images: no images (*{', *'.join(IMAGE_SUFFIXES)}, *.parquet) in {items}")
    return found


def load_source(source: Source) -> np.ndarray:
    """Decode a planned clean image; raises ``InputError`` naming it if unreadable."""
    where = source.where
    try:
        if source.row is None:
            data = Path(source.path).read_bytes()
        else:
            data = pq.read_table(source.path, columns=["image"]).column("image")[source.row].as_py()
    except OSError as error:
        raise InputError(f"{where}: cannot read: {error}") from error
    image = decode_image(data, where)
    if image.shape[:2] != (source.height, source.width):
        raise InputError(f"{where}: decoded size {image.shape[:2]} differs from its header")
    return image


def scan_sources(paths: Sequence[Path]) -> tuple[list[Source], list[dict[str, str]]]:
    """Read every image's header: sources with their size, and the unreadable ones (skipped)."""
    sources: list[Source] = []
    skipped: list[dict[str, str]] = []
    for path in paths:
        if path.suffix.lower() == ".parquet":
            try:
                table = pq.read_table(path)
                if "image" not in table.column_names:
                    raise InputError(
                        f"{path}: a Parquet input needs a binary column 'image' (encoded images)"
                    )
                names = table.column("name").to_pylist() if "name" in table.column_names else None
                blobs = table.column("image").to_pylist()
            except (OSError, pa.ArrowException) as error:
                raise InputError(f"{path}: cannot read Parquet images: {error}") from error
            images = [
                (blob, Path(str(names[row]) if names else f"{path.stem}-{row:05d}").stem, row)
                for row, blob in enumerate(blobs)
            ]
        else:
            images = [(path, path.stem, None)]
        for data, name, row in images:
            where = str(path) if row is None else f"{path}#{row}"
            try:
                size = image_size(data)
            except Exception as error:  # PIL raises many types for corrupt data
                log.warning("skipping %s: %s", where, error)
                skipped.append({"source": where, "reason": f"unreadable image: {error}"})
                continue
            sources.append(Source(name, str(path.resolve()), row, *size))
    names = [s.name for s in sources]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise InputError(
            f"--images: several images share the name {duplicates[0]!r} (sample ids need unique names)"
        )
    return sorted(sources, key=lambda s: s.name), skipped
