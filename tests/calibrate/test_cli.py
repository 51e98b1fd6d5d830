"""``degtrans calibrate make-targets`` and ``degtrans calibrate`` argument handling."""

from degtrans.cli import main


def test_make_targets_command(tmp_path, capsys):
    assert main(["calibrate", "make-targets", "-o", str(tmp_path), "-n", "2", "--size", "40x56"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["target_000_noise.png", "target_001_noise.png"]
    assert "wrote 2 targets" in capsys.readouterr().out


def test_calibrate_missing_directory_is_a_user_error(tmp_path, capsys):
    code = main(["calibrate", str(tmp_path / "nope"), "-o", str(tmp_path / "cam.npz"), "--local"])
    assert code == 2
    assert "pairs directory not found" in capsys.readouterr().err


def test_calibrate_rejects_bad_override(tmp_path, capsys):
    (tmp_path / "pairs").mkdir()
    code = main(
        ["calibrate", str(tmp_path / "pairs"), "-o", "x.npz", "--local", "--set", "calibrate.psf_param=cnn"]
    )
    assert code == 2
    assert "psf_param" in capsys.readouterr().err
