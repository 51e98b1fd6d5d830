"""The pair-dataset format: the contract between ``degtrans simulate`` (writer) and training (reader).

Layout of a dataset directory ``OUT/``::

    OUT/shards/part-XXXXX.parquet   rows: one degraded/clean patch pair each (schema: shard_schema)
    OUT/fields/<camera>.npz         the PSF field of every camera
    OUT/manifest.json               format, version, shards (path, rows, sha256), cameras, config
    OUT/_SUCCESS                    written last: a dataset is complete only when it exists

Pixels are flattened HWC ``uint16 = round(v * 65535)`` of values ``v`` in [0, 1] (``encode_u16``);
``raw`` (optional) holds the (H, W) mosaic in camera DN. A sample's split is a hash of its source
image's name (``split_of``), so it is the same on every host and run; a dataset whose hash gives
validation no image holds out one anyway (``val_fallback``). Only pyarrow and numpy: any stage may use it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from degtrans import __version__
from degtrans.atomic import write_atomic
from degtrans.errors import InputError, MissingInput

FORMAT = "degtrans-pairs"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
SHARD_PREFIX = "part-"
META_COLUMNS = ("sample_id", "camera", "y0", "x0", "frame_h", "frame_w", "height", "width", "channels")
PIXEL_COLUMNS = ("clean", "degraded")
IMAGE_COLUMNS = (*PIXEL_COLUMNS, "raw")
INT_COLUMNS = ("y0", "x0", "frame_h", "frame_w", "height", "width", "channels")
# Each pair's draws, float64 after the pixels: the ISP draw and the noise variances (``var = shot * x +
# read`` in linear raw units). ``ISP_COLUMNS`` is also the order of the (B, 12) ISP vector that training
# and evaluation pass around (``ISPParams.vector``): brightness gain, red and blue gains, then rgb2cam
# row-major.
ISP_COLUMNS = (
    "isp_rgb_gain",
    "isp_red_gain",
    "isp_blue_gain",
    *(f"isp_rgb2cam_{i}{j}" for i in range(3) for j in range(3)),
)
NOISE_COLUMNS = ("noise_shot", "noise_read")
PARAM_COLUMNS = (*ISP_COLUMNS, *NOISE_COLUMNS)
# Parquet key-value metadata of a shard: the format header, and (at close) its row count and skips.
SHARD_HEADER_KEY = b"degtrans"
SHARD_INFO_KEY = b"degtrans_shard"
LAYOUT = "clean/degraded: flattened HWC uint16 = round(v * 65535); raw: (H, W) camera DN"


def shard_path(data_dir: str | os.PathLike, index: int) -> Path:
    """``data_dir/shards/part-XXXXX.parquet``."""
    return Path(data_dir) / "shards" / f"{SHARD_PREFIX}{index:05d}.parquet"


def shard_schema(
    float_columns: Sequence[str], store_raw: bool = False, header: Mapping[str, Any] | None = None
) -> pa.Schema:
    """The Parquet schema of a shard.

    Args:
        float_columns: per-sample float64 columns after the pixels (e.g. the degradation parameters).
        store_raw: add the ``raw`` mosaic with its CFA phase and levels.
        header: stored as JSON under ``degtrans`` with the format name and version.
    """
    fields = [pa.field(n, pa.string()) for n in ("sample_id", "camera", "source")]
    fields += [pa.field(n, pa.int32()) for n in INT_COLUMNS]
    fields += [pa.field(n, pa.list_(pa.uint16())) for n in PIXEL_COLUMNS]
    fields += [pa.field(n, pa.float64()) for n in float_columns]
    if store_raw:
        fields += [pa.field("raw", pa.list_(pa.uint16())), pa.field("raw_pattern", pa.string())]
        fields += [pa.field(n, pa.float64()) for n in ("raw_black_level", "raw_white_level")]
    if header is None:
        return pa.schema(fields)
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": __version__, **header}
    return pa.schema(fields, metadata={SHARD_HEADER_KEY: json.dumps({**full, "layout": LAYOUT}).encode()})


def rows_to_table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Row dicts -> a table of ``schema``; image columns (flat uint16 arrays) never pass through lists."""
    columns = {}
    for name in schema.names:
        values = [row[name] for row in rows]
        if name in IMAGE_COLUMNS and values:
            offsets = np.zeros(len(values) + 1, dtype=np.int32)
            np.cumsum([v.size for v in values], out=offsets[1:])
            columns[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(values)))
        else:
            columns[name] = pa.array(values, type=schema.field(name).type)
    return pa.table(columns, schema=schema)


def encode_u16(hwc: np.ndarray) -> np.ndarray:
    """(H, W, C) in [0, 1] -> flattened HWC uint16, ``round(v * 65535)`` (clipped first)."""
    return np.rint(np.clip(hwc, 0.0, 1.0) * 65535.0).astype(np.uint16).ravel()


def decode_u16(column: pa.Array | pa.ChunkedArray | Sequence, shape: tuple[int, int, int]) -> np.ndarray:
    """A pixel column (list<uint16>, little-endian binary, or a sequence of either) -> (n, H, W, C)
    float32 in [0, 1] (the inverse of :func:`encode_u16`)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, pa.Array):
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            flat = np.frombuffer(b"".join(column.to_pylist()), dtype="<u2")
        else:
            flat = column.flatten().to_numpy(zero_copy_only=False)
    else:
        values = list(column)
        if values and isinstance(values[0], (bytes, bytearray)):
            flat = np.frombuffer(b"".join(values), dtype="<u2")
        else:
            flat = np.concatenate([np.asarray(v).reshape(-1) for v in values]) if values else np.zeros(0)
    return flat.astype(np.uint16, copy=False).reshape(-1, *shape).astype(np.float32) / 65535.0


def source_of(sample_id: str) -> str:
    """The source image of a sample: the middle of ``camera/source/pNN`` (the whole id otherwise)."""
    parts = sample_id.split("/")
    return parts[1] if len(parts) >= 3 else sample_id


def _source_hash(source: str) -> float:
    """A source image's place in [0, 1): the first 8 bytes of its name's SHA-256."""
    return int.from_bytes(hashlib.sha256(source.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_of(sample_id: str, val_fraction: float, fallback: str | None = None) -> str:
    """``"val"`` or ``"train"``, from a hash of the sample's source image (stable across runs and hosts).

    Whole images are held out: every crop of one source image, through every camera, lands in the
    same split, so validation never sees a scene the network trained on. ``fallback``: a source image
    that is validation whatever its hash (:func:`val_fallback` of the dataset's sources).
    """
    source = source_of(sample_id)
    return "val" if source == fallback or _source_hash(source) < val_fraction else "train"


def val_fallback(sources: Iterable[str], val_fraction: float) -> str | None:
    """The source image a dataset's validation split takes when the hash gives it none.

    With ``val_fraction > 0``, at least two source images and none hashed below ``val_fraction`` (a
    small dataset: ten images at 0.1 leave validation empty a third of the time), the one with the
    smallest hash, so validation is never silently empty; ``None`` when the hash already gives one, when
    ``val_fraction`` is 0, or when a single image cannot be both trained on and held out.
    """
    names = sorted(set(sources))
    if val_fraction <= 0 or len(names) < 2 or any(_source_hash(n) < val_fraction for n in names):
        return None
    return min(names, key=_source_hash)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (shards and fields are listed with theirs in the manifest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_complete(data_dir: str | os.PathLike) -> bool:
    """Whether ``data_dir`` holds a finished dataset (manifest and ``_SUCCESS``)."""
    return (Path(data_dir) / SUCCESS).exists() and (Path(data_dir) / MANIFEST).exists()


def write_manifest(data_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` (format and version first), then ``_SUCCESS``, each atomically.

    Args:
        manifest: at least ``patch_size``, ``shards`` (``path``, ``rows``, ``sha256``) and ``cameras``
            (``field``, ``sha256``, ``frame_h``, ``frame_w``).

    Returns:
        The manifest's path.
    """
    data_dir = Path(data_dir)
    for key in ("shards", "cameras", "patch_size"):
        if key not in manifest:
            raise ValueError(f"{data_dir / MANIFEST}: manifest has no {key!r}")
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": __version__, **manifest}
    path = write_atomic(data_dir / MANIFEST, json.dumps(body, indent=2))
    write_atomic(data_dir / SUCCESS, "")
    return path


def read_manifest(data_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``data_dir/manifest.json`` of a complete dataset (``_SUCCESS`` present).

    Raises:
        MissingInput: no such directory, or a listed shard is missing.
        InputError: naming the file, for an incomplete dataset or an unreadable or foreign manifest.
    """
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST
    if not data_dir.is_dir():
        raise MissingInput(f"{data_dir}: dataset directory not found")
    if not (data_dir / SUCCESS).exists():
        raise InputError(
            f"{data_dir}: incomplete dataset (no {SUCCESS} marker); was 'degtrans simulate' interrupted?"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: cannot read dataset manifest: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise InputError(f"{path}: not a degtrans pair dataset (format {found!r}, expected {FORMAT!r})")
    for key in ("shards", "cameras", "patch_size"):
        if key not in manifest:
            raise InputError(f"{path}: manifest has no {key!r}")
    for shard in manifest["shards"]:
        if not (data_dir / shard["path"]).is_file():
            raise MissingInput(f"{path}: listed shard {shard['path']} is missing")
    return manifest
