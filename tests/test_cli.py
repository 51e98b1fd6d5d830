"""The command line as a whole: every subcommand's help, ``inspect``, and user errors (exit 2, no traceback).

Each stage's subcommands are tested in ``tests/<stage>/test_cli.py``.
"""

import subprocess
import sys

import numpy as np
import pytest

from degtrans.cli import build_parser, main
from degtrans.io import read_image
from degtrans.testing.synthetic import gaussian_field

SUBCOMMANDS = ["calibrate", "simulate", "train", "sweep", "restore", "evaluate", "submit", "inspect", "demo"]


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_works_for_every_subcommand(name, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([name, "--help"])
    assert info.value.code == 0
    assert "usage: degtrans" in capsys.readouterr().out


def test_inspect_prints_a_summary(tmp_path, capsys):
    path = gaussian_field(grid=(2, 3), psf_size=7, image_size=(40, 60)).save(tmp_path / "f.npz")
    assert main(["inspect", str(path)]) == 0
    assert "2 x 3 tiles" in capsys.readouterr().out


def test_inspect_draws_a_png(tmp_path):
    path = gaussian_field(grid=(2, 3), psf_size=7, image_size=(40, 60)).save(tmp_path / "f.npz")
    out = tmp_path / "grid.png"
    assert main(["inspect", str(path), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_field_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_text("nope")
    assert main(["inspect", str(bad)]) == 2
    assert "bad.npz" in capsys.readouterr().err


def test_bad_override_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--set", "train.epochs=abc"]) == 2
    assert "train.epochs" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["degtrans", "degtrans.cli"])
def test_module_entry_points(module):
    out = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "degtrans" in out.stdout


def test_make_dead_leaves_writes_images_simulate_can_read(tmp_path, capsys):
    from degtrans.simulate.sources import list_images

    assert main(["simulate", "make-dead-leaves", "-n", "2", "--size", "24x40", "-o", str(tmp_path)]) == 0
    images = list_images(tmp_path)
    assert len(images) == 2 and read_image(images[0]).shape == (24, 40, 3)
    assert "wrote 2 dead-leaves images" in capsys.readouterr().out
    assert main(["simulate", "make-dead-leaves", "-n", "0", "-o", str(tmp_path)]) == 2
    assert "--count" in capsys.readouterr().err
    textured = tmp_path / "textured"
    args = ["simulate", "make-dead-leaves", "-n", "1", "--size", "24x40", "--texture", "1"]
    assert main([*args, "-o", str(textured)]) == 0
    assert not np.array_equal(read_image(list_images(textured)[0]), read_image(images[0]))
    assert main(["simulate", "make-dead-leaves", "-n", "1", "--texture", "2", "-o", str(textured)]) == 2
    assert "--texture" in capsys.readouterr().err
