"""The pair-dataset format (degtrans.pairs): manifest and _SUCCESS, schema, uint16 pixels, splits."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import degtrans.pairs as pairs
from degtrans.pairs import (
    FORMAT,
    FORMAT_VERSION,
    META_COLUMNS,
    PIXEL_COLUMNS,
    decode_u16,
    encode_u16,
    is_complete,
    read_manifest,
    rows_to_table,
    shard_path,
    shard_schema,
    split_of,
    val_fallback,
    write_manifest,
)


def _row(i, size=4):
    pixels = np.random.default_rng(i).random((size, size, 3))
    return {
        "sample_id": f"cam/img{i}/p00",
        "camera": "cam",
        "source": f"img{i}",
        **dict.fromkeys(("y0", "x0"), i),
        **dict.fromkeys(("frame_h", "frame_w"), 16),
        **dict.fromkeys(("height", "width"), size),
        "channels": 3,
        "clean": encode_u16(pixels),
        "degraded": encode_u16(pixels[::-1]),
        "noise_read": 0.01 * i,
    }, pixels


def _dataset(root, rows=3):
    schema = shard_schema(["noise_read"], header={"shard": 0})
    path = shard_path(root, 0)
    path.parent.mkdir(parents=True)
    pq.write_table(rows_to_table([_row(i)[0] for i in range(rows)], schema), path)
    shard = {"path": "shards/part-00000.parquet", "rows": rows, "sha256": pairs.file_sha256(path)}
    camera = {"field": "fields/cam.npz", "sha256": "0", "frame_h": 16, "frame_w": 16}
    return {"patch_size": 4, "shards": [shard], "cameras": {"cam": camera}, "samples": rows}


def test_manifest_round_trip_and_success_written_last(tmp_path, monkeypatch):
    manifest = _dataset(tmp_path)
    order = []
    write = pairs.write_atomic
    monkeypatch.setattr(pairs, "write_atomic", lambda p, data: order.append(p.name) or write(p, data))
    assert not is_complete(tmp_path)
    write_manifest(tmp_path, manifest)
    assert order == ["manifest.json", "_SUCCESS"] and is_complete(tmp_path)
    read = read_manifest(tmp_path)
    assert read["format"] == FORMAT and read["format_version"] == FORMAT_VERSION and "version" in read
    assert {k: read[k] for k in manifest} == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_SUCCESS", "manifest.json", "shards"]


def test_a_failed_manifest_write_leaves_no_success(tmp_path, monkeypatch):
    manifest = _dataset(tmp_path)

    def fail(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(pairs, "write_atomic", fail)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(tmp_path, manifest)
    assert not (tmp_path / "_SUCCESS").exists()
    with pytest.raises(ValueError, match="'cameras'"):
        write_manifest(tmp_path, {"patch_size": 4, "shards": []})


def test_read_manifest_names_what_is_wrong(tmp_path):
    write_manifest(tmp_path, _dataset(tmp_path))
    shard_path(tmp_path, 0).unlink()
    with pytest.raises(FileNotFoundError, match="part-00000.parquet is missing"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="manifest.json: not a degtrans pair dataset"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": FORMAT, "shards": []}))
    with pytest.raises(ValueError, match="manifest has no 'cameras'"):
        read_manifest(tmp_path)


def test_shard_schema_rows_and_pixels_round_trip(tmp_path):
    manifest = _dataset(tmp_path)
    table = pq.read_table(tmp_path / manifest["shards"][0]["path"])
    assert table.column_names[: len(META_COLUMNS) + 3] == [
        "sample_id", "camera", "source", *META_COLUMNS[2:], *PIXEL_COLUMNS
    ]  # fmt: skip
    header = json.loads(table.schema.metadata[pairs.SHARD_HEADER_KEY])
    assert header["format"] == FORMAT and header["shard"] == 0 and "uint16" in header["layout"]
    clean = decode_u16(table.column("clean"), (4, 4, 3))
    expected = np.stack([_row(i)[1] for i in range(3)])
    assert clean.dtype == np.float32 and np.abs(clean - expected).max() <= 0.5 / 65535 + 1e-7
    as_bytes = [a.astype("<u2").tobytes() for a in table.column("clean").to_numpy(zero_copy_only=False)]
    np.testing.assert_array_equal(decode_u16(as_bytes, (4, 4, 3)), clean)  # Ray hands binary columns too
    empty = rows_to_table([], shard_schema(["noise_read"]))
    assert empty.num_rows == 0


def test_encode_u16_rounds_and_clips():
    values = np.array([[[-0.1, 0.0, 0.5 / 65535 + 1e-9], [0.5, 1.0, 1.2]]])
    np.testing.assert_array_equal(encode_u16(values), [0, 0, 1, 32768, 65535, 65535])


def test_split_of_is_a_stable_hash():
    ids = [f"cam/img{i}/p00" for i in range(400)]
    val = [s for s in ids if split_of(s, 0.25) == "val"]
    assert 60 < len(val) < 140 and val == [s for s in ids if split_of(s, 0.25) == "val"]
    assert all(split_of(s, 0.0) == "train" for s in ids) and all(split_of(s, 1.0) == "val" for s in ids)


def test_split_holds_out_whole_source_images():
    """Every crop of an image, through every camera, is in the same split (no scene in both)."""
    ids = [f"{cam}/img{i}/p{p:02d}" for cam in ("camA", "camB") for i in range(100) for p in range(6)]
    by_source: dict[str, set[str]] = {}
    for s in ids:
        by_source.setdefault(s.split("/")[1], set()).add(split_of(s, 0.3))
    assert all(len(splits) == 1 for splits in by_source.values())
    assert 15 < sum(splits == {"val"} for splits in by_source.values()) < 45


def test_a_small_dataset_always_holds_out_one_image_when_asked_to():
    """Ten images at 0.1 may hash none into validation: one is held out anyway, the same everywhere."""
    names = [f"img{i}" for i in range(10)]
    empty = [v for v in (0.01, 0.02, 0.05, 0.1) if all(split_of(f"c/{n}/p00", v) == "train" for n in names)]
    assert empty, "pick names whose hashes leave some val_fraction empty"
    fraction = empty[-1]
    fallback = val_fallback(names, fraction)
    assert fallback in names and fallback == val_fallback(reversed(names), fraction)
    ids = [f"{cam}/{n}/p{p:02d}" for cam in ("a", "b") for n in names for p in range(3)]
    val = {s.split("/")[1] for s in ids if split_of(s, fraction, fallback) == "val"}
    assert val == {fallback}
    # Left alone: a split the hash already gives, no validation asked for, a single image.
    assert val_fallback(names, 0.0) is None and val_fallback(["only"], 0.5) is None
    assert val_fallback([*names, *(f"more{i}" for i in range(400))], fraction) is None
