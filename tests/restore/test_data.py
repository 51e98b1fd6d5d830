import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from degtrans.restore.data import PairReader, patch_psfs, read_manifest, rows_to_batch, split_of
from tests.restore.conftest import PATCH


def test_split_is_deterministic_and_near_the_fraction():
    ids = [f"cam/img{i:04d}/p{j}" for i in range(200) for j in range(5)]
    splits = [split_of(s, 0.2) for s in ids]
    assert splits == [split_of(s, 0.2) for s in ids]
    assert 0.15 < splits.count("val") / len(ids) < 0.25
    assert all(split_of(s, 0.0) == "train" for s in ids) and all(split_of(s, 1.0) == "val" for s in ids)
    # Growing the fraction only moves samples from train to val.
    assert all(split_of(s, 0.3) == "val" for s, split in zip(ids, splits, strict=True) if split == "val")


def test_reader_decodes_pixels_and_coordinates(toy_data, toy_field):
    reader = PairReader(toy_data, with_psf=True)
    batch = next(reader.batches("all", 5, shuffle=False))
    assert batch["degraded"].shape == batch["clean"].shape == (5, 3, PATCH, PATCH)
    assert (
        batch["degraded"].dtype == torch.float32 and 0 <= batch["clean"].min() and batch["clean"].max() <= 1
    )
    table = pq.read_table(toy_data / "shards" / "part-00000.parquet")
    raw = np.asarray(table.column("clean")[0].as_py(), dtype=np.uint16).reshape(PATCH, PATCH, 3)
    assert batch["sample_id"][0] == table.column("sample_id")[0].as_py()
    np.testing.assert_array_equal(np.round(batch["clean"][0].permute(1, 2, 0).numpy() * 65535), raw)
    y0, x0 = int(batch["y0"][0]), int(batch["x0"][0])
    np.testing.assert_allclose(batch["psf"][0].numpy(), toy_field.at(y0 + PATCH / 2, x0 + PATCH / 2))
    np.testing.assert_allclose(batch["psf"][0].numpy(), patch_psfs(toy_field, y0, x0, PATCH))
    assert batch["coords"].shape == (5, 3, PATCH, PATCH)


def test_shuffle_is_seeded_complete_and_split_disjoint(toy_data):
    reader = PairReader(toy_data, val_fraction=0.6)  # the split is by frame: one of two frames

    def order(**kw):
        return [s for b in reader.batches(batch_size=3, **kw) for s in b["sample_id"]]

    train = order(split="train", seed=0, epoch=0)
    assert train == order(split="train", seed=0, epoch=0)
    assert train != order(split="train", seed=0, epoch=1)
    assert sorted(train) == sorted(order(split="train", shuffle=False))
    val = order(split="val", shuffle=False)
    assert set(train).isdisjoint(val) and len(train) + len(val) == 16
    assert len(train) == reader.count("train") and all(split_of(s, 0.6) == "val" for s in val) and val
    assert len(order(split="all", limit=7, shuffle=False)) == 7


def test_reader_trusts_only_the_manifest(toy_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(toy_data, data)
    stray = pq.read_table(data / "shards" / "part-00000.parquet")
    pq.write_table(stray, data / "shards" / "stray.parquet")
    assert PairReader(data).count("all") == 16
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:1]
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert PairReader(data).count("all") == manifest["shards"][0]["rows"]


def test_incomplete_or_foreign_datasets_are_clear_errors(toy_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(toy_data, data)
    (data / "_SUCCESS").unlink()
    with pytest.raises(ValueError, match="_SUCCESS"):
        read_manifest(data)
    (data / "_SUCCESS").write_text("")
    (data / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="manifest.json"):
        read_manifest(data)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_manifest(tmp_path / "nowhere")


def test_binary_pixel_columns_decode_like_lists():
    pixels = np.arange(2 * 2 * 2 * 3, dtype=np.uint16).reshape(2, 12) * 1000
    common = {
        "sample_id": ["a", "b"], "camera": ["c", "c"], "y0": [0, 2], "x0": [0, 0], "frame_h": [8, 8],
        "frame_w": [8, 8], "height": [2, 2], "width": [2, 2], "channels": [3, 3],
    }  # fmt: skip
    as_lists = rows_to_batch({**common, "clean": pa.array(list(pixels)), "degraded": pa.array(list(pixels))})
    as_bytes = rows_to_batch(
        {**common, "clean": [p.tobytes() for p in pixels], "degraded": [p.tobytes() for p in pixels]}
    )
    torch.testing.assert_close(as_lists["clean"], as_bytes["clean"])
    assert as_lists["clean"][1, 2, 1, 1] == pytest.approx(pixels[1].reshape(2, 2, 3)[1, 1, 2] / 65535)
