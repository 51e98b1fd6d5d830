"""``degtrans train``, ``evaluate`` and ``restore`` from the command line."""

import numpy as np

from degtrans.cli import main
from degtrans.io import read_image, write_image


def test_train_evaluate_and_restore_from_the_command_line(tmp_path, toy_data, toy_field, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(toy_data), "--model", "fovkpn", "--epochs", "1", "--batch-size", "8"]
    tiny = ["--set", "train.width=4", "--set", "train.fovkpn.offset_channels=4"]
    assert main([*args, "-o", str(run), "--local", *tiny]) == 0
    assert (run / "best.pt").is_file() and "best validation PSNR" in capsys.readouterr().out

    png = tmp_path / "compare.png"
    methods = ["--method", "identity", "--method", "wiener", "--method", f"ckpt:{run / 'best.pt'}"]
    assert main(["evaluate", "--data", str(toy_data), "--split", "all", *methods, "-o", str(png)]) == 0
    out = capsys.readouterr().out
    assert "identity" in out and "wiener" in out and "corner" in out and png.read_bytes()[:4] == b"\x89PNG"

    photo = write_image(tmp_path / "photo.png", np.random.default_rng(0).random((*toy_field.image_size, 3)))
    field = toy_field.save(tmp_path / "camA.npz")
    restored = tmp_path / "restored.png"
    assert (
        main(["restore", str(photo), "-o", str(restored), "--method", "wiener", "--field", str(field)]) == 0
    )
    assert read_image(restored).shape == read_image(photo).shape
    assert main(["restore", str(photo), "-o", str(restored), "--checkpoint", str(run / "best.pt"),
                 "--tile-size", "32", "--overlap", "8"]) == 0  # fmt: skip


def test_cli_errors_name_the_problem(tmp_path, toy_data, capsys):
    assert (
        main(
            ["restore", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o.png"), "--method", "identity"]
        )
        == 2
    )
    assert "missing.png" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "p.png"), "-o", str(tmp_path / "o.png")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(toy_data), "--method", "magic"]) == 2
    assert "magic" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nothing"), "-o", str(tmp_path / "run"), "--local"]) == 2
    assert "nothing" in capsys.readouterr().err


def test_train_on_a_cpu_builds_the_small_network_unless_asked(tmp_path, toy_data, capsys, monkeypatch):
    import json

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = [
        "train",
        "--data",
        str(toy_data),
        "--model",
        "fovkpn",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--local",
    ]
    assert main([*args, "-o", str(tmp_path / "small")]) == 0
    printed = capsys.readouterr().out
    assert "the small network (width=16, fovkpn.offset_channels=16, fovkpn.decoder_deform=1)" in printed
    small = json.loads((tmp_path / "small" / "config.json").read_text())
    fovkpn = small["fovkpn"]
    assert (small["width"], fovkpn["offset_channels"], fovkpn["decoder_deform"]) == (16, 16, 1)
    assert main([*args, "-o", str(tmp_path / "asked"), "--set", "train.width=8"]) == 0
    asked = json.loads((tmp_path / "asked" / "config.json").read_text())
    fovkpn = asked["fovkpn"]
    assert (asked["width"], fovkpn["offset_channels"], fovkpn["decoder_deform"]) == (8, 16, 1)


def test_given_keys_count_the_file_the_overrides_and_a_preset(tmp_path):
    from degtrans.config import CPU_SIZES, given_keys, small_on_cpu

    toml = tmp_path / "run.toml"
    toml.write_text('[train]\nwidth = 24\n[train.optim]\nloss = "l2"\n[simulate]\npatch_size = 64\n')
    given = given_keys(toml, ["train.epochs=3", "restore.overlap=8"], "train")
    assert given == {"width", "optim.loss", "epochs"}
    paper = given_keys(None, ["train.preset=paper"], "train")
    assert {"width", "fovkpn.offset_channels", "fovkpn.decoder_deform"} <= paper
    from degtrans.config import TrainConfig

    config, changed = small_on_cpu(TrainConfig(), {"width"})
    assert config.width == 32 and changed == {k: v for k, v in CPU_SIZES.items() if k != "width"}
