"""Reader of the degraded/clean pair datasets that ``degtrans simulate`` writes (pyarrow, no Ray).

The format (layout, manifest, columns, pixel encoding, splits) is ``degtrans.pairs``. Only the shards
the manifest lists are read, with column projection; batches are shuffled by file and within a bounded
buffer from an explicit seed, and ``uint16`` pixels become float32 in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from degtrans.errors import InputError
from degtrans.field import PSFField
from degtrans.pairs import (
    ISP_COLUMNS,
    META_COLUMNS,
    NOISE_COLUMNS,
    PIXEL_COLUMNS,
    decode_u16,
    read_manifest,
    source_of,
    split_of,
    val_fallback,
)
from degtrans.restore.coords import fov_coords

Split = Literal["train", "val", "all"]


def load_fields(data_dir: str | Path, manifest: Mapping[str, Any]) -> dict[str, PSFField]:
    """The PSF field of every camera in the manifest, read from ``OUT/fields/<camera>.npz``."""
    return {
        name: PSFField.load(Path(data_dir) / entry["field"]) for name, entry in manifest["cameras"].items()
    }


def patch_psfs(field: PSFField, y0: float, x0: float, size: int | tuple[int, int]) -> np.ndarray:
    """The PSF (C, k, k) at the centre of the patch whose top-left sensor pixel is ``(y0, x0)``."""
    height, width = (size, size) if isinstance(size, int) else size
    return field.at(y0 + height / 2.0, x0 + width / 2.0)


def patch_corner_psfs(field: PSFField, y0: float, x0: float, size: int | tuple[int, int]) -> np.ndarray:
    """The PSFs (4, C, k, k) at the patch's corners (top-left, top-right, bottom-left, bottom-right).

    Blended bilinearly across the patch they give the field's PSF at every pixel (exactly when the
    patch lies between four tile centres, as a bilinear approximation when it spans more).
    """
    height, width = (size, size) if isinstance(size, int) else size
    corners = ((0.5, 0.5), (0.5, width - 0.5), (height - 0.5, 0.5), (height - 0.5, width - 0.5))
    return np.stack([field.at(y0 + dy, x0 + dx) for dy, dx in corners])


def batch_columns(available: Sequence[str]) -> list[str]:
    """The columns a training batch is decoded from: metadata, pixels, and the noise and ISP columns
    that a shard with the names ``available`` stores (older datasets and toy data lack some; non-blind
    models use them)."""
    optional = [name for name in (*NOISE_COLUMNS, *ISP_COLUMNS) if name in available]
    return [*META_COLUMNS, *PIXEL_COLUMNS, *optional]


def rows_to_batch(
    columns: Mapping[str, Any],
    fields: Mapping[str, PSFField] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Decode a batch of rows (pyarrow table columns, or Ray Data numpy columns) into tensors.

    Args:
        columns: at least ``sample_id, camera, y0, x0, frame_h, frame_w, height, width, channels,
            clean, degraded``; all rows have the same patch size.
        fields: camera -> PSF field; when given the batch gets ``"psf"``.

    Returns:
        ``{"degraded", "clean": (B, C, H, W) float32 in [0, 1], "coords": (B, 3, H, W) (x, y, r),
        "psf": (B, C, k, k) at the patch centre and "psf_corners": (B, 4, C, k, k) (with fields),
        "noise": (B, 2) float32 ``(shot, read)`` variances (when the rows have ``noise_*``; a missing
        one is 0), "isp": (B, 12) float32 ``ISP_COLUMNS`` (when the rows have all of them),
        "camera", "sample_id": lists, "y0", "x0", "frame_h", "frame_w": (B,) int64}``.
    """

    def array(name: str, dtype: type) -> np.ndarray:
        value = columns[name]
        return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value).astype(dtype)

    def strings(name: str) -> list[str]:
        value = columns[name]
        return [str(v) for v in (value.to_pylist() if hasattr(value, "to_pylist") else value)]

    height, width, channels = (array(n, np.int64) for n in ("height", "width", "channels"))
    if len(set(height.tolist())) > 1 or len(set(width.tolist())) > 1 or len(set(channels.tolist())) > 1:
        raise ValueError("rows_to_batch: rows of one batch must share height, width and channels")
    shape = (int(height[0]), int(width[0]), int(channels[0]))
    batch: dict[str, Any] = {}
    for name in PIXEL_COLUMNS:
        pixels = torch.from_numpy(decode_u16(columns[name], shape))
        batch[name] = pixels.permute(0, 3, 1, 2).contiguous().to(device)
    for name in ("y0", "x0", "frame_h", "frame_w"):
        batch[name] = torch.from_numpy(array(name, np.int64))
    batch["sample_id"], batch["camera"] = strings("sample_id"), strings("camera")
    batch["coords"] = fov_coords(
        batch["y0"], batch["x0"], batch["frame_h"], batch["frame_w"], shape[0], shape[1], device=device
    )
    batch_size = len(batch["sample_id"])

    def floats(names: Sequence[str]) -> torch.Tensor:
        values = [array(n, np.float32) if n in columns else np.zeros(batch_size, np.float32) for n in names]
        return torch.from_numpy(np.stack(values, axis=1)).to(device)

    if any(name in columns for name in NOISE_COLUMNS):
        batch["noise"] = floats(NOISE_COLUMNS)
    if all(name in columns for name in ISP_COLUMNS):
        batch["isp"] = floats(ISP_COLUMNS)
    if fields is not None:
        for camera in batch["camera"]:
            if camera not in fields:
                raise InputError(
                    f"rows_to_batch: the dataset has no PSF field for camera {camera!r}"
                    f" (have {sorted(fields)})"
                )
        places = list(zip(batch["camera"], batch["y0"].tolist(), batch["x0"].tolist(), strict=True))
        for key, psfs_at in (("psf", patch_psfs), ("psf_corners", patch_corner_psfs)):
            psfs = [psfs_at(fields[camera], y0, x0, shape[:2]) for camera, y0, x0 in places]
            batch[key] = torch.from_numpy(np.stack(psfs)).to(device)
    return batch


@dataclass
class PairReader:
    """Batches of one split of a pair dataset. Reads the manifest (and PSF fields) once, and the
    ``sample_ids`` of every shard (a list per shard).

    Args:
        data_dir: the dataset directory ``OUT/``.
        val_fraction: fraction of source images (by ``split_of``) in the validation split; when the
            hash gives it none, one image anyway (``val_fallback``, attribute ``fallback``).
        with_psf: attach each patch's PSF (``"psf"``) for non-blind models.
    """

    data_dir: Path
    val_fraction: float = 0.1
    with_psf: bool = False

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.manifest = read_manifest(self.data_dir)
        self.fields = load_fields(self.data_dir, self.manifest) if self.with_psf else None
        self.shards = [self.data_dir / entry["path"] for entry in self.manifest["shards"]]
        self.sample_ids = [self._sample_ids(shard) for shard in self.shards]
        sources = (source_of(s) for ids in self.sample_ids for s in ids)
        self.fallback = val_fallback(sources, self.val_fraction)

    @staticmethod
    def _sample_ids(shard: Path) -> list[str]:
        try:
            return pq.read_table(shard, columns=["sample_id"]).column("sample_id").to_pylist()
        except (pa.ArrowInvalid, OSError) as error:
            raise InputError(f"{shard}: cannot read Parquet shard: {error}") from error

    def _keep(self, sample_ids: list[str], split: Split) -> np.ndarray:
        keep = [split == "all" or split_of(s, self.val_fraction, self.fallback) == split for s in sample_ids]
        return np.array(keep, dtype=bool)

    def count(self, split: Split = "train") -> int:
        """Number of samples in ``split``."""
        return sum(int(self._keep(ids, split).sum()) for ids in self.sample_ids)

    def _rows(
        self, split: Split, shuffle: bool, rng: np.random.Generator, buffer_size: int
    ) -> Iterator[pa.Table]:
        order = rng.permutation(len(self.shards)) if shuffle else np.arange(len(self.shards))
        buffer: list[pa.Table] = []
        for index in order:
            shard = self.shards[int(index)]
            try:
                parquet = pq.ParquetFile(shard)
                columns = batch_columns(parquet.schema_arrow.names)
                for record_batch in parquet.iter_batches(batch_size=64, columns=columns):
                    table = pa.Table.from_batches([record_batch])
                    keep = self._keep(table.column("sample_id").to_pylist(), split)
                    for row in np.flatnonzero(keep):
                        buffer.append(table.slice(int(row), 1))
                        if not shuffle:
                            yield buffer.pop()
                        elif len(buffer) >= buffer_size:
                            yield buffer.pop(int(rng.integers(len(buffer))))
            except (pa.ArrowInvalid, OSError) as error:
                raise InputError(f"{shard}: cannot read Parquet shard: {error}") from error
        while buffer:
            yield buffer.pop(int(rng.integers(len(buffer))) if shuffle else 0)

    def batches(
        self,
        split: Split = "train",
        batch_size: int = 16,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        shuffle_buffer: int = 64,
        drop_last: bool = False,
        limit: int | None = None,
        device: torch.device | str = "cpu",
    ) -> Iterator[dict[str, Any]]:
        """Yield decoded batches (see :func:`rows_to_batch`).

        The order depends only on ``(seed, epoch)``: shards are permuted, then rows pass through a
        ``shuffle_buffer``-row buffer. ``limit`` caps the number of samples.
        """
        if batch_size < 1:
            raise InputError(f"batch_size (train.batch_size) must be >= 1, got {batch_size}")
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        rng = np.random.default_rng([seed, epoch])
        pending: list[pa.Table] = []
        seen = 0
        for row in self._rows(split, shuffle, rng, max(1, shuffle_buffer)):
            if limit is not None and seen >= limit:
                break
            pending.append(row)
            seen += 1
            if len(pending) == batch_size:
                yield rows_to_batch(_columns(pending), self.fields, device)
                pending = []
        if pending and not drop_last:
            yield rows_to_batch(_columns(pending), self.fields, device)

    def steps_per_epoch(self, batch_size: int, split: Split = "train", drop_last: bool = False) -> int:
        n = self.count(split)
        return n // batch_size if drop_last else math.ceil(n / batch_size)


def _columns(rows: list[pa.Table]) -> dict[str, pa.ChunkedArray]:
    """One-row tables -> Arrow columns (pixels never pass through Python lists)."""
    table = pa.concat_tables(rows)
    return {name: table.column(name) for name in table.column_names}
