"""The device path (a row group developed in one pass) writes the one-sample path's shards within 1 DN.

It runs on any torch device, so its equality with the CPU path is tested on CPU tensors here; the
GPU-marked test checks the same on CUDA.
"""

import dataclasses

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from degtrans.config import SimulateConfig
from degtrans.simulate.batch import batch_window
from degtrans.simulate.catalogue import fields_as_entries
from degtrans.simulate.degrade import context_window
from degtrans.simulate.plan import plan_shards, resolve_cameras
from degtrans.simulate.sources import list_images, scan_sources
from degtrans.simulate.writer import write_shard
from tests.simulate.test_dataset import _make_inputs

CONFIG = SimulateConfig(patch_size=24, patches_per_image=3, rows_per_file=4, row_group_rows=2)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    images, fields = _make_inputs(root)
    # A frame smaller than a patch's window: the window shrinks to the frame.
    small = (np.random.default_rng(1).random((27, 30, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(images / "small.png"), small)
    # A frame whose header reads but whose pixels do not: planned, then skipped by both paths.
    good = (images / "small.png").read_bytes()
    (images / "truncated.png").write_bytes(good[: len(good) // 2])
    return images, fields


def _specs(inputs, output, config=CONFIG):
    images, fields = inputs
    sources, _ = scan_sources(list_images(images))
    return plan_shards(output, sources, resolve_cameras(fields_as_entries(fields)), config)


def _assert_same_shards(a_specs, b_specs, write_a, write_b):
    skipped, rows = [], []
    for a_spec, b_spec in zip(a_specs, b_specs, strict=True):
        a_result, b_result = write_a(a_spec), write_b(b_spec)
        assert [s["reason"] for s in a_result.skipped] == [s["reason"] for s in b_result.skipped]
        skipped += a_result.skipped
        a, b = pq.read_table(a_result.path), pq.read_table(b_result.path)
        assert a.num_rows == b.num_rows
        rows.append(a.num_rows)
        # Positions and every sampled parameter come from the samples' CPU generators: exactly equal.
        for name in a.column_names:
            if name not in ("clean", "degraded", "raw"):
                assert a.column(name).equals(b.column(name)), name
        for name in {"clean", "degraded", "raw"} & set(a.column_names) if a.num_rows else ():
            x = np.concatenate(a.column(name).to_pylist()).astype(np.int32)
            y = np.concatenate(b.column(name).to_pylist()).astype(np.int32)
            # The blur sums in another order (~1e-7 relative): a value on a rounding edge moves 1 DN.
            assert np.abs(x - y).max() <= 1 and np.mean(x != y) < 0.02, name
    assert any("truncated" in s["source"] for s in skipped) and sum(r > 0 for r in rows) >= 3


@pytest.mark.parametrize(
    "changes",
    [{}, {"clean_cfa": True, "store_raw": True, "demosaic": "bilinear", "cfa_pattern": "GBRG"}],
)
def test_batched_path_writes_the_one_sample_shards_within_1_dn(inputs, tmp_path, changes):
    config = dataclasses.replace(CONFIG, **changes)
    _assert_same_shards(
        _specs(inputs, tmp_path / "one", config),
        _specs(inputs, tmp_path / "batched", config),
        write_shard,
        lambda spec: write_shard(spec, batched=True),
    )


@pytest.mark.parametrize("y0", [0, 3, 20, 36])
def test_batch_window_holds_the_one_sample_context(y0):
    frame, patch, k = (60, 80), 24, 7
    top, bottom, left, right = context_window(y0, 50, (patch, patch), frame, k)
    wy, wx, h, w = batch_window(y0, 50, patch, frame, k)
    assert (h, w) == (patch + 2 * (k // 2 + 2),) * 2
    assert 0 <= wy <= top and bottom <= wy + h <= frame[0]
    assert 0 <= wx <= left and right <= wx + w <= frame[1]
    # Where the context meets the frame border, so does the window (both mirror there).
    assert (top == 0) == (wy == 0) and (bottom == frame[0]) == (wy + h == frame[0])


@pytest.mark.gpu
def test_gpu_shards_match_cpu_shards_within_1_dn(inputs, tmp_path):
    _assert_same_shards(
        _specs(inputs, tmp_path / "gpu"),
        _specs(inputs, tmp_path / "cpu"),
        lambda spec: write_shard(spec, device="cuda"),
        lambda spec: write_shard(spec, device="cpu"),
    )


def test_device_argument_on_the_cpu_gives_the_default_shard(inputs, tmp_path):
    config = dataclasses.replace(CONFIG, patches_per_image=1)
    a, b = _specs(inputs, tmp_path / "a", config)[0], _specs(inputs, tmp_path / "b", config)[0]
    assert pq.read_table(write_shard(a).path).equals(pq.read_table(write_shard(b, device="cpu").path))
