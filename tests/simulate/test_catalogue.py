"""Camera catalogues: loading and its errors, random lens families, drawn cameras, per-camera counts."""

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from degtrans.cli import main
from degtrans.config import SimulateConfig
from degtrans.field import PSFField
from degtrans.simulate import writer
from degtrans.simulate.catalogue import fields_as_entries, load_catalogue, write_random_cameras
from degtrans.simulate.dataset import build_dataset
from degtrans.simulate.plan import draw_camera, plan_shards, resolve_cameras
from degtrans.simulate.sources import Source
from degtrans.testing.synthetic import gaussian_field
from tests.simulate.test_dataset import FRAME, _write_images

CONFIG = SimulateConfig(patch_size=16, patches_per_image=4, rows_per_file=5, row_group_rows=3)


def _fields(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    fields = (gaussian_field((2, 2), 5, FRAME, sigma_centre=0.6 + 0.1 * i) for i in range(count))
    return [field.save(folder / f"c{i}.npz") for i, field in enumerate(fields)]


def _rows(out):
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest, pa.concat_tables([pq.read_table(out / s["path"]) for s in manifest["shards"]])


def test_toml_catalogue_resolves_paths_names_profiles_and_weights(tmp_path):
    _fields(tmp_path / "cams", 2)
    (tmp_path / "cams" / "cameras.toml").write_text(
        '[[camera]]\nfield = "c0.npz"\nweight = 3\nprofile = "sony-rx100m4"\n\n'
        '[[camera]]\nfield = "c1.npz"\nname = "wide"\n'
    )
    for where in (tmp_path / "cams", tmp_path / "cams" / "cameras.toml"):
        entries = load_catalogue(where)
        assert [(e.name, e.field.name, e.profile, e.weight) for e in entries] == [
            ("c0", "c0.npz", "sony-rx100m4", 3.0),
            ("wide", "c1.npz", None, 1.0),
        ]
    # A directory without a cameras.toml: every field, weight 1.
    _fields(tmp_path / "plain", 3)
    assert [e.name for e in load_catalogue(tmp_path / "plain")] == ["c0", "c1", "c2"]


@pytest.mark.parametrize(
    "body, message",
    [
        (
            '[[camera]]\nfield = "missing.npz"\n',
            r"camera\[0\] \('missing'\): field .*missing.npz does not exist",
        ),
        ('[[camera]]\nfield = "c0.npz"\nweight = 0\n', r"camera\[0\] \('c0'\): 'weight' must be a positive"),
        ('[[camera]]\nfield = "c0.npz"\nweigth = 2\n', r"camera\[0\]: unknown key 'weigth'"),
        ('[[camera]]\nname = "x"\n', r"camera\[0\]: 'field' .* is required"),
        ('[[camera]]\nfield = "c0.npz"\n[[camera]]\nfield = "c0.npz"\n', "two cameras are named 'c0'"),
        ("cameras = 1\n", "unknown top-level key 'cameras'"),
        ("[[camera\n", "not a valid TOML catalogue"),
    ],
)
def test_catalogue_errors_name_the_file_and_the_entry(tmp_path, body, message):
    _fields(tmp_path, 1)
    path = tmp_path / "cameras.toml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message) as error:
        load_catalogue(path)
    assert str(path) in str(error.value)


def test_a_catalogue_without_fields_or_a_missing_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="neither cameras.toml nor any"):
        load_catalogue(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_catalogue(tmp_path / "nope.toml")


def test_make_field_count_writes_distinct_seeded_lenses(tmp_path, capsys):
    args = ["simulate", "make-field", "--preset", "random", "--count", "3", "--grid", "1x2",
            "--psf-size", "7", "--image-size", "24x32"]  # fmt: skip
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    assert "wrote 3 lens fields" in capsys.readouterr().out
    entries = load_catalogue(tmp_path / "a")
    assert [e.name for e in entries] == ["lens-0000", "lens-0001", "lens-0002"]
    psfs = [PSFField.load(e.field).psfs for e in entries]
    assert not np.allclose(psfs[0], psfs[1]) and not np.allclose(psfs[1], psfs[2])
    for entry in entries:  # same seed, same lenses
        np.testing.assert_array_equal(
            PSFField.load(entry.field).psfs, PSFField.load(tmp_path / "b" / entry.field.name).psfs
        )
    assert main([*args, "--seed", "1", "-o", str(tmp_path / "c")]) == 0
    assert not np.allclose(PSFField.load(tmp_path / "c" / "lens-0000.npz").psfs, psfs[0])


def test_random_cameras_in_worker_processes_are_the_same_files(tmp_path):
    sizes = {"grid": (1, 2), "psf_size": 7, "image_size": (24, 32)}
    serial = write_random_cameras(tmp_path / "a", 3, seed=2, **sizes)
    parallel = write_random_cameras(tmp_path / "b", 3, seed=2, workers=2, **sizes)
    assert [p.read_bytes() for p in serial] == [p.read_bytes() for p in parallel]


def test_drawn_cameras_follow_the_weights_and_depend_only_on_seed_and_id():
    cumulative = [1.0, 2.0, 10.0]
    draws = Counter(draw_camera(0, f"img{i:04d}/p00", cumulative) for i in range(4000))
    assert set(draws) == {0, 1, 2}
    assert abs(draws[2] / 4000 - 0.8) < 0.03 and abs(draws[0] / 4000 - 0.1) < 0.03
    assert draw_camera(0, "x/p01", cumulative) == draw_camera(0, "x/p01", cumulative)
    assert [draw_camera(s, "x/p01", cumulative) for s in range(20)] != [
        draw_camera(0, "x/p01", cumulative)
    ] * 20


def test_a_shard_carries_only_the_cameras_it_uses(tmp_path):
    cameras = resolve_cameras(fields_as_entries(_fields(tmp_path / "many", 40)))
    sources = [Source(f"img{i:04d}", str(tmp_path / f"img{i:04d}.png"), None, *FRAME) for i in range(10)]
    config = SimulateConfig(patch_size=16, patches_per_image=4, rows_per_file=2, camera_choice="draw")
    specs = plan_shards(tmp_path / "out", sources, cameras, config)
    assert len(specs) == 20
    for spec in specs:
        assert 1 <= len(spec.cameras) <= 2
        assert {spec.cameras[c].name for _, _, c, _ in spec.samples} == {c.name for c in spec.cameras}
    assert len({c.name for s in specs for c in s.cameras}) > 10


def test_catalogue_dataset_draws_cameras_and_counts_them(tmp_path, capsys, monkeypatch):
    images = _write_images(tmp_path / "images", count=4)
    _fields(tmp_path / "cams", 3)
    (tmp_path / "cams" / "cameras.toml").write_text(
        "".join(f'[[camera]]\nfield = "c{i}.npz"\nweight = {w}\n' for i, w in enumerate((1, 1, 6)))
    )
    loads = []
    real_load = PSFField.load
    monkeypatch.setattr(
        PSFField, "load", classmethod(lambda cls, path: loads.append(path) or real_load(path))
    )
    writer.load_field_cached.cache_clear()
    summary = build_dataset(images, None, tmp_path / "out", CONFIG, catalogue=tmp_path / "cams")
    manifest, table = _rows(tmp_path / "out")
    ids = table.column("sample_id").to_pylist()
    assert summary["pairs"] == len(ids) == len(set(ids)) == 4 * 4 and ids[0] == "img0000/p00"
    # Every row's camera is the one its id draws, and the manifest counts them.
    cumulative = [1.0, 2.0, 8.0]
    drawn = [f"c{draw_camera(CONFIG.seed, sid, cumulative)}" for sid in ids]
    assert table.column("camera").to_pylist() == drawn
    counts = Counter(drawn)
    assert {name: entry["samples"] for name, entry in manifest["cameras"].items()} == {
        f"c{i}": counts[f"c{i}"] for i in range(3)
    }
    assert manifest["cameras"]["c2"]["weight"] == 6.0 and manifest["config"]["camera_choice"] == "draw"
    # Shard writers read each field once per process (the plan reads each once more to check it).
    assert len(loads) <= 3 + 3  # 4 shards; without the cache up to 3 + 12
    assert main(["inspect", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "16 pairs" in out and "3 cameras (draw)" in out
    for name, count in counts.items():
        assert any(line.split()[:2] == [name, str(count)] for line in out.splitlines())


def test_cli_cameras_or_psf_not_both(tmp_path, capsys):
    fields = _fields(tmp_path / "cams", 1)
    assert (
        main(
            [
                "simulate",
                "--cameras",
                str(tmp_path / "cams"),
                "--psf",
                str(fields[0]),
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert main(["simulate", "-o", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.count("either as --psf") == 2
