"""The photograph set maker on a tiny fake Debian package (nothing is downloaded)."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from degtrans.cli import main
from degtrans.io import read_image, write_image
from degtrans.simulate.photoset import (
    Package,
    Photo,
    copyright_stanzas,
    cover_crop,
    downscale,
    licence_of,
    linear_to_srgb,
    make_photo_set,
    photo_paths,
    read_photo_set,
    reduced_size,
)

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fake

Files: *
Copyright: 2020 Everyone
License: GPL-2+

Files: pics/*.png
       pics/other.jpg
Copyright: 2021, Ann Example
           2022, Bob Example
License: CC-BY-SA-3.0

Files: pics/b.png
Copyright: 2023 Carl
License: CC0-1.0

License: GPL-2+
 The licence's text, which is not a Files stanza.
"""


def _fake_deb(tmp_path, images):
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: fake-pics\nVersion: 1.0-1\nArchitecture: all\nMaintainer: x <x@example.org>\n"
        "Description: fake photographs\n"
    )
    for name, image in images.items():
        write_image(root / "usr/share/fake" / name, image)
    doc = root / "usr/share/doc/fake-pics"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    deb = tmp_path / "fake-pics_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True,
                   capture_output=True)  # fmt: skip
    return deb


@pytest.fixture
def fake_set(tmp_path):
    rng = np.random.default_rng(0)
    images = {
        "a.png": rng.random((48, 72, 3)).astype(np.float32),
        "b.png": rng.random((40, 40, 3)).astype(np.float32),
    }
    deb = _fake_deb(tmp_path, images)
    calls = []

    def fetch(package, folder):
        calls.append(package)
        folder.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(deb, folder / deb.name))

    package = Package("fake-pics", "usr/share/fake", "pics")
    photos = (
        Photo("fake-a", "fake-pics", "a.png", "train"),
        Photo("fake-b", "fake-pics", "b.png", "heldout"),
    )
    kwargs = dict(cache=tmp_path / "cache", photos=photos, packages=(package,), short_side=16, min_factor=1.5,
                  min_short=0, fetch=fetch, progress=False)  # fmt: skip
    return tmp_path / "set", kwargs, calls, images


@needs_dpkg
def test_set_has_both_splits_sizes_and_each_photos_licence(fake_set):
    out, kwargs, calls, images = fake_set
    manifest = make_photo_set(out, **kwargs)
    assert calls == ["fake-pics"] and manifest["counts"] == {"train": 1, "heldout": 1}
    assert manifest["packages"]["fake-pics"]["version"] == "1.0-1"
    entries = {e["name"]: e for e in manifest["photos"]}
    # The last matching stanza wins; patterns name the upstream tree ("pics/..."), not /usr/share.
    assert (entries["fake-a"]["licence"], entries["fake-a"]["copyright"]) == (
        "CC-BY-SA-3.0",
        "2021, Ann Example; 2022, Bob Example",
    )
    assert (entries["fake-b"]["licence"], entries["fake-b"]["copyright"]) == ("CC0-1.0", "2023 Carl")
    assert entries["fake-a"]["original_size"] == [48, 72] and entries["fake-a"]["size"] == [16, 24]
    assert entries["fake-b"]["size"] == [16, 16]  # 40 / 16 = 2.5 > min_factor
    train, heldout = photo_paths(out, "train"), photo_paths(out, "heldout")
    assert [p.name for p in train] == ["fake-a.webp"] and [p.name for p in heldout] == ["fake-b.webp"]
    assert read_image(train[0]).shape == (16, 24, 3)
    expected = downscale(images["a.png"], (16, 24))
    assert np.abs(read_image(train[0]) - expected).max() <= 0.5 / 255 + 1e-6  # lossless 8-bit WebP
    assert read_photo_set(out) == json.loads((out / "manifest.json").read_text())


@needs_dpkg
def test_second_run_fetches_and_writes_nothing_and_new_settings_rewrite(fake_set):
    out, kwargs, calls, _ = fake_set
    make_photo_set(out, **kwargs)
    written = {p.name: p.stat().st_mtime_ns for p in out.rglob("*.webp")}
    shutil.rmtree(kwargs["cache"])  # the set alone is enough: nothing is fetched or unpacked again
    make_photo_set(out, **kwargs)
    assert calls == ["fake-pics"]
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*.webp")} == written
    manifest = make_photo_set(out, **{**kwargs, "min_factor": 3.0})
    assert calls == ["fake-pics", "fake-pics"] and manifest["photos"][0]["size"] == [16, 24]
    assert manifest["photos"][1]["size"] == [13, 13] and manifest["settings"]["min_factor"] == 3.0


@needs_dpkg
def test_a_photo_moved_to_the_other_split_leaves_no_copy_behind(fake_set):
    out, kwargs, _, _ = fake_set
    make_photo_set(out, **kwargs)
    moved = (kwargs["photos"][0], Photo("fake-b", "fake-pics", "b.png", "train"))
    make_photo_set(out, **{**kwargs, "photos": moved})
    assert sorted(p.name for p in photo_paths(out, "train")) == ["fake-a.webp", "fake-b.webp"]
    assert photo_paths(out, "heldout") == [] and not (out / "heldout" / "fake-b.webp").exists()


@needs_dpkg
def test_bad_catalogue_entries_are_named(fake_set):
    out, kwargs, _, _ = fake_set
    missing = (Photo("fake-c", "fake-pics", "c.png", "train"),)
    with pytest.raises(ValueError, match=r"fake-c: fake-pics has no file usr/share/fake/c.png"):
        make_photo_set(out, **{**kwargs, "photos": missing})
    twice = (Photo("x", "fake-pics", "a.png", "train"), Photo("x", "fake-pics", "b.png", "heldout"))
    with pytest.raises(ValueError, match="'x' is used twice"):
        make_photo_set(out, **{**kwargs, "photos": twice})
    with pytest.raises(ValueError, match="unknown package 'other'"):
        make_photo_set(out, **{**kwargs, "photos": (Photo("y", "other", "a.png", "train"),)})


def test_missing_set_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="degtrans simulate make-photos"):
        photo_paths(tmp_path / "nothing", "train")


def test_cli_without_apt_get_is_a_clear_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither apt-get nor dpkg-deb
    status = main(["simulate", "make-photos", "-o", str(tmp_path / "set"), "--cache", str(tmp_path / "c")])
    assert status == 2 and "apt-get not found" in capsys.readouterr().err


def test_copyright_last_matching_stanza_wins():
    stanzas = copyright_stanzas(COPYRIGHT)
    assert len(stanzas) == 3  # the standalone License stanza has no Files
    assert licence_of(stanzas, "pics/b.png").licence == "CC0-1.0"
    assert licence_of(stanzas, "pics/sub/a.png").licence == "CC-BY-SA-3.0"  # DEP-5's * crosses '/'
    assert licence_of(stanzas, "README").licence == "GPL-2+"
    assert licence_of(copyright_stanzas("Files: x\nLicense: MIT\n"), "y") is None


def test_downscale_averages_in_linear_light_and_sizes_follow_the_rules():
    checker = np.zeros((2, 2, 3), np.float32)
    checker[0, 0] = checker[1, 1] = 1.0
    assert np.allclose(downscale(checker, (1, 1)), linear_to_srgb(np.full(3, 0.5)), atol=1e-6)  # not 0.5
    assert reduced_size(1600, 2560, 1024, 1.5) == (1024, 1638)
    assert reduced_size(1200, 1920, 1024, 1.5) == (800, 1280)  # at least 1.5x
    assert reduced_size(480, 640, 1024, 1.5, min_short=384) == (384, 512)  # not below min_short
    assert reduced_size(300, 400, 1024, 1.5, min_short=384) == (300, 400)  # never enlarged


def test_cover_crop_keeps_the_whole_scene_centred_and_never_enlarges():
    image = np.zeros((60, 120, 3), np.float32)
    image[:, 40:80] = 1.0  # a bright vertical band in the middle third
    frame = cover_crop(image, (20, 30))
    assert frame.shape == (20, 30, 3)  # 60x120 -> 20x40 covers 20x30; 5 columns cut on each side
    assert np.allclose(frame[:, 10:20], 1.0, atol=1e-6) and np.allclose(frame[:, :3], 0.0, atol=1e-6)
    assert cover_crop(image, (60, 120)).shape == (60, 120, 3)
    with pytest.raises(ValueError, match="60x120 image cannot cover 64x96"):
        cover_crop(image, (64, 96))
