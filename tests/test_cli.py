"""The command line as a whole: every subcommand's help, the documented command lines, ``inspect``, flags
as config fields, and errors (a user's: one line, exit 2 or 1; a bug's: its traceback).

Each stage's subcommands are tested in ``tests/<stage>/test_cli.py``.
"""

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from degtrans.cli import build_parser, main, resolve_config, size
from degtrans.errors import DegtransError
from degtrans.io import read_image
from degtrans.testing.synthetic import gaussian_field

SUBCOMMANDS = ["calibrate", "simulate", "train", "sweep", "restore", "evaluate", "submit", "inspect", "demo"]
TWO_WORDS = [
    "calibrate make-targets",
    "simulate make-field",
    "simulate make-dead-leaves",
    "simulate make-photos",
]
ROOT = Path(__file__).resolve().parent.parent
BASH = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_works_for_every_subcommand(name, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([name, "--help"])
    assert info.value.code == 0
    assert "usage: degtrans" in capsys.readouterr().out


@pytest.mark.parametrize("name", TWO_WORDS)
def test_two_word_commands_show_as_typed(name, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    listing = capsys.readouterr().out
    assert name in listing and name.replace(" ", "-") not in listing
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*name.split(), "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: degtrans {name} ")


def documented_commands() -> list[list[str]]:
    """The ``degtrans ...`` lines of README.md's and docs/cli.md's bash blocks, ``[optional]`` dropped."""
    lines = []
    for page in (ROOT / "README.md", ROOT / "docs" / "cli.md"):
        for block in BASH.findall(page.read_text(encoding="utf-8")):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(re.sub(r"\[[^\]]*\]", "", line), comments=True)
                if words[:1] == ["degtrans"]:
                    lines.append(words[1:])
    return lines


@pytest.mark.parametrize("words", documented_commands(), ids=shlex.join)
def test_documented_command_lines_parse(words):
    args = build_parser().parse_args(words)
    assert " ".join(words).startswith(args.command)


def test_size_is_one_axb_parser():
    assert size("6x8") == (6, 8) and size("256X384") == (256, 384)
    with pytest.raises(argparse.ArgumentTypeError, match="expected AxB"):
        size("6by8")


def test_flags_set_their_config_fields_after_set():
    args = build_parser().parse_args(
        ["calibrate", "P/", "-o", "c.npz", "--grid", "3x4", "--psf-size", "21",
         "--set", "calibrate.psf_size=11", "--set", "calibrate.solve.cg_iterations=5", "--distortion", "none"]
    )  # fmt: skip
    config = resolve_config(args).calibrate
    assert (config.rows, config.cols, config.psf_size, config.solve.cg_iterations) == (3, 4, 21, 5)
    assert config.register.distortion == "none" and config.register.sigma == 3.0
    store = build_parser().parse_args(["simulate", "--psf", "a.npz", "-o", "o", "--store-raw", "--seed", "4"])
    simulate = resolve_config(store).simulate
    assert simulate.store_raw is True and simulate.fit_field is False and simulate.seed == 4


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


def test_debug_shows_the_traceback_of_a_user_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_text("nope")
    assert main(["inspect", str(bad), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("degtrans inspect: error: ")


def test_a_failed_run_exits_1_and_a_bug_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    import degtrans.field

    path = gaussian_field(grid=(2, 3), psf_size=7, image_size=(40, 60)).save(tmp_path / "f.npz")

    def failing(_path):
        raise DegtransError("the stage failed")

    monkeypatch.setattr(degtrans.field.PSFField, "load", failing)
    assert main(["inspect", str(path)]) == 1
    assert capsys.readouterr().err == "degtrans inspect: error: the stage failed\n"

    def buggy(_path):
        raise ValueError("a bug")

    monkeypatch.setattr(degtrans.field.PSFField, "load", buggy)
    with pytest.raises(ValueError, match="a bug"):
        main(["inspect", str(path)])


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
