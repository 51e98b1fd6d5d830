"""A user's mistake, run through ``degtrans.cli.main``: one line naming the file or flag, exit 2, no
traceback (``degtrans.errors.InputError``); a calibration left without a usable pair exits 1."""

import json

import numpy as np
import pytest

from degtrans.cli import main
from degtrans.io import write_image
from degtrans.pairs import FORMAT, MANIFEST, SUCCESS
from degtrans.testing.synthetic import gaussian_field

# The bundled photographs' frame: simulate's default images.
FRAME = (256, 384)


def _field(tmp_path, image_size=FRAME):
    return str(gaussian_field(grid=(2, 3), psf_size=7, image_size=image_size).save(tmp_path / "cam.npz"))


def _photo(tmp_path, size=(32, 48)):
    return str(write_image(tmp_path / "photo.png", np.full((*size, 3), 0.5, np.float32)))


def _foreign_dataset(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / SUCCESS).touch()
    (data / MANIFEST).write_text(json.dumps({"format": "something-else"}))
    return str(data)


def _finished_dataset(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / SUCCESS).touch()
    manifest = {"format": FORMAT, "shards": [], "cameras": {}, "patch_size": 8, "fingerprint": "other"}
    (out / MANIFEST).write_text(json.dumps(manifest))
    return str(out)


def _bad_catalogue(tmp_path):
    path = tmp_path / "cameras.toml"
    path.write_text(f'[[camera]]\nfield = "{_field(tmp_path)}"\nlens = "wide"\n')
    return str(path)


# (command, argv from tmp_path, what the one line names)
MISTAKES = {
    "calibrate-empty-dir": (
        "calibrate",
        lambda t: ["calibrate", str(t), "-o", str(t / "cam.npz"), "--local"],
        "no calibration pairs",
    ),
    "make-targets-too-small": (
        "calibrate make-targets",
        lambda t: ["calibrate", "make-targets", "-o", str(t / "targets"), "-n", "1", "--size", "40x40"],
        "--size",
    ),
    "make-targets-unknown-kind": (
        "calibrate make-targets",
        lambda t: ["calibrate", "make-targets", "-o", str(t / "targets"), "--kinds", "calib,zebra"],
        "--kinds",
    ),
    "make-field-unknown-preset": (
        "simulate make-field",
        lambda t: ["simulate", "make-field", "--preset", "fisheye", "-o", str(t / "f.npz")],
        "--preset",
    ),
    "make-field-even-psf-size": (
        "simulate make-field",
        lambda t: ["simulate", "make-field", "--psf-size", "30", "-o", str(t / "f.npz")],
        "--psf-size",
    ),
    "make-field-empty-grid": (
        "simulate make-field",
        lambda t: ["simulate", "make-field", "--grid", "0x4", "-o", str(t / "f.npz")],
        "--grid",
    ),
    "simulate-missing-field": (
        "simulate",
        lambda t: ["simulate", "--psf", str(t / "nope.npz"), "-o", str(t / "out")],
        "nope.npz",
    ),
    "simulate-unknown-profile": (
        "simulate",
        lambda t: ["simulate", "--psf", _field(t), "--profile", "leica-m0", "-o", str(t / "out")],
        "camera profile 'leica-m0'",
    ),
    "simulate-patch-too-large": (
        "simulate",
        lambda t: ["simulate", "--psf", _field(t), "--patch-size", "4096", "-o", str(t / "out")],
        "simulate.patch_size",
    ),
    "simulate-negative-gpus": (
        "simulate",
        lambda t: ["simulate", "--psf", _field(t), "--gpus-per-worker", "-1", "-o", str(t / "out")],
        "--gpus-per-worker",
    ),
    "simulate-bad-catalogue-key": (
        "simulate",
        lambda t: ["simulate", "--cameras", _bad_catalogue(t), "-o", str(t / "out")],
        "cameras.toml: camera[0]",
    ),
    "simulate-into-another-dataset": (
        "simulate",
        lambda t: ["simulate", "--psf", _field(t), "-o", _finished_dataset(t)],
        "holds a finished dataset with other inputs",
    ),
    "restore-field-of-another-frame": (
        "restore",
        lambda t: [
            "restore", _photo(t), "-o", str(t / "out.png"), "--method", "wiener",
            "--field", _field(t, (40, 60)),
        ],
        "cam.npz: PSF field is for a 40x60 frame",
    ),
    "restore-overlap-not-below-tile": (
        "restore",
        lambda t: [
            "restore", _photo(t), "-o", str(t / "o.png"), "--method", "identity", "--tile-size", "16",
            "--overlap", "16",
        ],
        "restore.overlap",
    ),
    "inspect-incomplete-dataset": (
        "inspect",
        lambda t: ["inspect", str(t)],
        "incomplete dataset",
    ),
    "inspect-foreign-dataset": (
        "inspect",
        lambda t: ["inspect", _foreign_dataset(t)],
        "manifest.json: not a degtrans pair dataset",
    ),
    "evaluate-foreign-dataset": (
        "evaluate",
        lambda t: ["evaluate", "--data", _foreign_dataset(t), "--method", "identity"],
        "manifest.json: not a degtrans pair dataset",
    ),
}  # fmt: skip


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_user_mistake_is_one_line_naming_it(mistake, tmp_path, capsys):
    command, argv, named = MISTAKES[mistake]
    code = main(argv(tmp_path))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith(f"degtrans {command}: error: ") and named in err, err


def _pair(tmp_path, layout=None, photo=None):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    image = np.random.default_rng(0).random((64, 96, 3), dtype=np.float32)
    write_image(pairs / "a.target.png", image)
    if layout is not None:
        (pairs / "a.target.json").write_text(layout)
    if photo is None:
        write_image(pairs / "a.photo.png", image)
    else:
        (pairs / "a.photo.png").write_bytes(photo)
    return pairs


@pytest.mark.parametrize(
    ("layout", "photo", "reason"),
    [
        ('{"kind": "calib"', None, "a.target.json: not a target layout"),
        (None, b"junk", "cannot decode image"),
    ],
    ids=["malformed-layout", "unreadable-photo"],
)
def test_an_unreadable_pair_is_rejected_with_its_reason(layout, photo, reason, tmp_path, capsys):
    pairs = _pair(tmp_path, layout, photo)
    code = main(["calibrate", str(pairs), "-o", str(tmp_path / "cam.npz"), "--local"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("degtrans calibrate: error: calibrate: no pair could be registered (a: ")
    assert reason in last
