"""The simulate command line: make-field, and input errors reported before Ray starts."""

import numpy as np

from degtrans.cli import main
from degtrans.field import PSFField


def test_make_field_writes_a_valid_field(tmp_path, capsys):
    out = tmp_path / "cam.npz"
    status = main(
        [
            "simulate",
            "make-field",
            "--grid",
            "2x3",
            "--psf-size",
            "11",
            "--image-size",
            "64x96",
            "--preset",
            "phone-tele",
            "--profile",
            "sony-rx100m4",
            "-o",
            str(out),
            "--png",
            str(tmp_path / "cam.png"),
        ]
    )
    assert status == 0 and (tmp_path / "cam.png").exists()
    field = PSFField.load(out)
    assert field.grid == (2, 3) and field.kernel_size == 11 and field.image_size == (64, 96)
    assert field.meta["profile"] == "sony-rx100m4" and np.allclose(
        field.psfs.sum(axis=(-1, -2)), 1, atol=1e-4
    )
    assert "wrote" in capsys.readouterr().out


def test_bad_grid_is_a_usage_error(tmp_path, capsys):
    try:
        main(["simulate", "make-field", "--grid", "6by8", "-o", str(tmp_path / "x.npz")])
    except SystemExit as exit_:
        assert exit_.code == 2
    assert "expected AxB" in capsys.readouterr().err


def test_field_of_another_frame_is_reported_without_starting_ray(tmp_path, capsys, monkeypatch):
    field = tmp_path / "cam.npz"
    assert (
        main(
            [
                "simulate",
                "make-field",
                "--grid",
                "1x1",
                "--psf-size",
                "5",
                "--image-size",
                "32x32",
                "--preset",
                "ideal",
                "-o",
                str(field),
            ]
        )
        == 0
    )
    import degtrans.cluster.synthesize as synthesize

    started = []
    # Another test module's Ray session may be up in this process: watch the call, not the state.
    monkeypatch.setattr(synthesize, "ensure_ray", lambda *args, **kwargs: started.append(args))
    status = main(["simulate", "--psf", str(field), "--patch-size", "16", "-o", str(tmp_path / "out")])
    assert status == 2
    assert "--fit-field" in capsys.readouterr().err
    assert started == []
