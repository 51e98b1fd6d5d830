"""``degtrans calibrate make-targets`` and ``degtrans calibrate`` argument handling."""

import pytest

from degtrans.cli import main


def test_make_targets_command(tmp_path, capsys):
    assert main(["calibrate", "make-targets", "-o", str(tmp_path), "-n", "2", "--size", "160x224"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "target_000_calib.json",
        "target_000_calib.png",
        "target_001_noise.json",
        "target_001_noise.png",
    ]
    assert "wrote 2 targets" in capsys.readouterr().out
    args = [
        "calibrate",
        "make-targets",
        "-o",
        str(tmp_path / "n"),
        "-n",
        "1",
        "--size",
        "40x56",
        "--kinds",
        "noise",
    ]
    assert main([*args, "--band-limit", "0.3"]) == 0
    assert '"band_limit": 0.3' in (tmp_path / "n" / "target_000_noise.json").read_text()
    assert main([*args, "--band-limit", "0.9"]) == 2
    assert "band_limit" in capsys.readouterr().err


def test_calibrate_help_documents_the_new_flags(capsys):
    for command in (["calibrate", "--help"], ["calibrate", "make-targets", "--help"]):
        with pytest.raises(SystemExit):
            main(command)
    text = capsys.readouterr().out
    for flag in ("--distortion", "--register-sigma", "left out", "--kinds", "--band-limit", "ArUco"):
        assert flag in text


def test_calibrate_missing_directory_is_a_user_error(tmp_path, capsys):
    code = main(["calibrate", str(tmp_path / "nope"), "-o", str(tmp_path / "cam.npz"), "--local"])
    assert code == 2
    assert "pairs directory not found" in capsys.readouterr().err


def test_calibrate_rejects_bad_override(tmp_path, capsys):
    (tmp_path / "pairs").mkdir()
    bad = ["--set", "calibrate.register.distortion=cnn"]
    code = main(["calibrate", str(tmp_path / "pairs"), "-o", "x.npz", "--local", *bad])
    assert code == 2
    assert "distortion" in capsys.readouterr().err
