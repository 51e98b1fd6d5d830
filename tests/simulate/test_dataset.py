"""Dataset synthesis without Ray: format, determinism, resume, no-op rerun, bad input."""

import json
import os

import cv2
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from degtrans.config import SimulateConfig
from degtrans.field import PSFField
from degtrans.pairs import FORMAT_VERSION
from degtrans.simulate.camera import CameraProfile
from degtrans.simulate.dataset import build_dataset
from degtrans.simulate.degrade import PairSettings
from degtrans.simulate.sample import simulate_sample
from degtrans.simulate.sources import bundled_images, list_images, scan_sources
from degtrans.testing.synthetic import gaussian_field

FRAME = (40, 56)
CONFIG = SimulateConfig(patch_size=24, patches_per_image=2, rows_per_file=3, row_group_rows=2)


def _write_images(folder, count=3, size=FRAME):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 255, (size[0] // 4, size[1] // 4, 3), dtype=np.uint8)
        image = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(folder / f"img{i:04d}.png"), image)
    return folder


def _make_inputs(root):
    images = _write_images(root / "images")
    a = gaussian_field((2, 3), 7, FRAME, sigma_centre=0.8, sigma_corner=1.6).save(root / "camA.npz")
    b = gaussian_field((2, 2), 5, FRAME, sigma_centre=1.2, sigma_corner=1.2).save(root / "camB.npz")
    return images, [a, b]


@pytest.fixture
def inputs(tmp_path):
    return _make_inputs(tmp_path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One finished dataset shared by the read-only tests: (images, fields, output)."""
    root = tmp_path_factory.mktemp("reference")
    images, fields = _make_inputs(root)
    build_dataset(images, fields, root / "out", CONFIG, profiles=["sony-rx100m4", "nikon-d700"])
    return images, fields, root / "out"


def _rows(output):
    manifest = json.loads((output / "manifest.json").read_text())
    tables = [pq.read_table(output / s["path"]) for s in manifest["shards"]]
    return manifest, pa.concat_tables(tables)


def test_dataset_format_and_contents(reference):
    images, fields, out = reference
    manifest, table = _rows(out)
    assert (out / "_SUCCESS").exists()
    assert manifest["samples"] == table.num_rows == 3 * 2 * 2
    ids = table.column("sample_id").to_pylist()
    assert len(set(ids)) == len(ids) and "camA/img0001/p01" in ids
    assert manifest["format"] == "degtrans-pairs" and manifest["format_version"] == FORMAT_VERSION
    assert manifest["cameras"]["camB"]["frame_h"] == FRAME[0]
    assert manifest["cameras"]["camA"]["profile"]["name"] == "sony-rx100m4"
    for shard in manifest["shards"]:
        meta = pq.read_metadata(out / shard["path"])
        assert meta.num_rows == shard["rows"] and meta.num_row_groups == 2
        assert json.loads(meta.metadata[b"degtrans"])["format_version"] == FORMAT_VERSION
        column = meta.row_group(0).column(meta.schema.names.index("element"))
        assert "BYTE_STREAM_SPLIT" in column.encodings and column.compression == "ZSTD"
    for camera, entry in manifest["cameras"].items():
        assert PSFField.load(out / entry["field"]).meta == PSFField.load(images.parent / f"{camera}.npz").meta
    row = table.slice(0, 1).to_pylist()[0]
    clean = np.asarray(row["clean"], np.uint16).reshape(row["height"], row["width"], row["channels"])
    assert clean.shape == (24, 24, 3) and 0 <= row["y0"] <= FRAME[0] - 24 and row["noise_shot"] > 0
    # A row depends only on (seed, sample_id): recompute it from the clean frame directly.
    frame = cv2.cvtColor(cv2.imread(str(images / f"{row['source']}.png")), cv2.COLOR_BGR2RGB) / np.float32(
        255
    )
    profile = CameraProfile.bundled("sony-rx100m4" if row["camera"] == "camA" else "nikon-d700")
    again = simulate_sample(
        frame,
        PSFField.load(fields[0 if row["camera"] == "camA" else 1]),
        profile,
        row["sample_id"],
        PairSettings.of(SimulateConfig(**manifest["config"])),
        row["camera"],
    )
    assert np.array_equal(again["degraded"], np.asarray(row["degraded"], np.uint16))
    assert (row["y0"], row["x0"]) == (again["y0"], again["x0"])


def test_duckdb_reads_the_shards(reference):
    out = reference[2]
    query = (
        f"SELECT camera, count(*) AS n, avg(noise_shot) FROM '{out}/shards/*.parquet' "
        "GROUP BY camera ORDER BY camera"
    )
    rows = duckdb.sql(query).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("camA", 6), ("camB", 6)]
    first = duckdb.sql(
        f"SELECT len(clean), clean[1] FROM '{out}/shards/part-00000.parquet' LIMIT 1"
    ).fetchall()[0]
    assert first[0] == 24 * 24 * 3


def test_rerun_of_finished_dataset_does_nothing(reference):
    images, fields, out = reference
    profiles = ["sony-rx100m4", "nikon-d700"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    summary = build_dataset(images, fields, out, CONFIG, profiles=profiles)
    assert summary["noop"] and summary["pairs_written"] == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="other inputs or config"):
        build_dataset(
            images, fields, out, SimulateConfig(**{**CONFIG.__dict__, "seed": 1}), profiles=profiles
        )


def test_interrupted_run_resumes_without_duplicates(tmp_path, reference):
    images, fields, done = reference
    ref_manifest, ref_rows = _rows(done)
    inputs = (images, fields)
    profiles = ["sony-rx100m4", "nikon-d700"]
    out = tmp_path / "out"

    class Killed(Exception):
        pass

    def kill_after_two(result):
        if result.index == 1:
            raise Killed

    with pytest.raises(Killed):
        build_dataset(inputs[0], inputs[1], out, CONFIG, profiles=profiles, on_shard=kill_after_two)
    assert not (out / "_SUCCESS").exists() and not (out / "manifest.json").exists()
    # What a kill mid-write leaves: orphan temporary files (old and current names) and a truncated shard.
    (out / "shards" / ".part-00002.parquet.dead.tmp").write_bytes(b"partial")
    (out / "shards" / ".part-00002.x7k2q9.parquet").write_bytes(b"partial")
    (out / "shards" / "part-00003.parquet").write_bytes(b"PAR1 truncated")
    before = (out / "shards" / "part-00000.parquet").stat().st_mtime_ns

    summary = build_dataset(inputs[0], inputs[1], out, CONFIG, profiles=profiles)
    manifest, rows = _rows(out)
    assert (out / "shards" / "part-00000.parquet").stat().st_mtime_ns == before
    assert summary["pairs_written"] == ref_manifest["samples"] - 2 * CONFIG.rows_per_file
    assert sorted(rows.column("sample_id").to_pylist()) == sorted(ref_rows.column("sample_id").to_pylist())
    assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in ref_manifest["shards"]]
    assert not list((out / "shards").glob(".*"))


def test_unreadable_images_are_skipped_and_counted(tmp_path, inputs):
    images, fields = inputs
    (images / "garbage.png").write_bytes(b"not an image at all")
    good = (images / "img0000.png").read_bytes()
    (images / "truncated.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    summary = build_dataset(images, fields, out, CONFIG)
    manifest, rows = _rows(out)
    reasons = {os.path.basename(s["source"]): s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"garbage.png", "truncated.png"} and summary["skipped"] == 2
    assert rows.num_rows == 3 * 2 * 2
    assert not any("truncated" in s for s in rows.column("sample_id").to_pylist())


def test_patch_larger_than_image_names_the_image(tmp_path, inputs):
    _write_images(inputs[0], count=1, size=(20, 56))
    (inputs[0] / "img0000.png").rename(inputs[0] / "tiny.png")
    with pytest.raises(ValueError, match=r"tiny.png: patch size 24"):
        build_dataset(inputs[0], inputs[1], tmp_path / "out", CONFIG)


def test_field_for_another_frame_needs_fit_field(tmp_path, inputs):
    other = gaussian_field((2, 2), 5, (80, 112)).save(tmp_path / "camC.npz")
    with pytest.raises(ValueError, match="--fit-field"):
        build_dataset(inputs[0], [other], tmp_path / "out", CONFIG)
    fitted = SimulateConfig(**{**CONFIG.__dict__, "fit_field": True})
    assert build_dataset(inputs[0], [other], tmp_path / "out", fitted)["pairs"] == 6


def test_parquet_of_encoded_images_as_input(tmp_path, inputs):
    images = sorted(inputs[0].glob("*.png"))
    table = pa.table({"name": [p.name for p in images], "image": [p.read_bytes() for p in images]})
    pq.write_table(table, tmp_path / "clean.parquet")
    sources, skipped = scan_sources(list_images(tmp_path / "clean.parquet"))
    assert [s.name for s in sources] == [p.stem for p in images] and not skipped
    out_dir, out_pq = tmp_path / "from_dir", tmp_path / "from_parquet"
    build_dataset(inputs[0], inputs[1][:1], out_dir, CONFIG)
    build_dataset(tmp_path / "clean.parquet", inputs[1][:1], out_pq, CONFIG)
    assert _rows(out_dir)[1].column("degraded").equals(_rows(out_pq)[1].column("degraded"))


def test_bundled_images_exist_and_share_a_frame():
    paths = bundled_images()
    assert len(paths) >= 4
    sources, skipped = scan_sources(paths)
    assert not skipped and len({(s.height, s.width) for s in sources}) == 1
    assert max(sources[0].height, sources[0].width) <= 384


def test_unfinished_output_of_another_dataset_is_refused(tmp_path, inputs):
    out = tmp_path / "out"

    def stop(result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset(inputs[0], inputs[1], out, CONFIG, on_shard=stop)
    other = SimulateConfig(**{**CONFIG.__dict__, "patches_per_image": 3})
    with pytest.raises(ValueError, match="belongs to another dataset"):
        build_dataset(inputs[0], inputs[1], out, other)
    assert len(list((out / "shards").glob("part-*.parquet"))) == 1


def test_sigkill_part_way_then_rerun_completes(tmp_path, reference):
    import signal
    import subprocess
    import sys
    import time

    images, fields, done = reference
    out = tmp_path / "out"
    small = SimulateConfig(**{**CONFIG.__dict__, "rows_per_file": 1})
    code = (
        "import sys; from degtrans.config import SimulateConfig; "
        "from degtrans.simulate.dataset import build_dataset; "
        f"build_dataset({str(images)!r}, {[str(f) for f in fields]!r}, {str(out)!r}, "
        f"SimulateConfig(**{small.__dict__!r}), profiles=['sony-rx100m4', 'nikon-d700'])"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "shards").glob("part-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "_SUCCESS").exists(), "the run finished before it could be killed"
    build_dataset(images, fields, out, small, profiles=["sony-rx100m4", "nikon-d700"])
    manifest, rows = _rows(out)
    _, reference_rows = _rows(done)
    # Same samples and the same pixels as the uninterrupted reference (other shard sizes).
    assert manifest["samples"] == reference_rows.num_rows
    assert (
        rows.sort_by("sample_id")
        .select(["sample_id", "degraded"])
        .equals(reference_rows.sort_by("sample_id").select(["sample_id", "degraded"]))
    )
