import math

import pytest
import torch

from degtrans.metrics import psnr, ssim
from degtrans.restore.coords import patch_radius, zone_of
from degtrans.restore.data import PairReader
from degtrans.restore.evaluate import ZONES, evaluate_methods, format_table


def test_identity_rows_are_the_input_quality_and_zones_partition_the_split(toy_data, tmp_path):
    png = tmp_path / "crops.png"
    rows = evaluate_methods(toy_data, ["identity", "wiener"], split="all", out_png=png, progress=False)
    assert {(r["method"], r["zone"]) for r in rows} == {(m, z) for m in ("identity", "wiener") for z in ZONES}
    by = {(r["method"], r["zone"]): r for r in rows}
    assert by[("identity", "all")]["count"] == 16
    assert sum(by[("identity", z)]["count"] for z in ZONES[1:]) == 16
    batches = list(PairReader(toy_data).batches("all", 16, shuffle=False))
    degraded, clean = batches[0]["degraded"], batches[0]["clean"]
    assert by[("identity", "all")]["psnr"] == pytest.approx(float(psnr(degraded, clean).mean()), abs=1e-4)
    assert by[("identity", "all")]["ssim"] == pytest.approx(float(ssim(degraded, clean).mean()), abs=1e-5)
    for zone in ZONES:  # an empty zone reports NaN, never a made-up number
        row = by[("identity", zone)]
        assert math.isnan(row["psnr"]) == (row["count"] == 0)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "identity" in format_table(rows) and "wiener" in format_table(rows)


def test_zones_follow_the_patch_radius():
    assert zone_of(patch_radius(40, 40, 20, 20, 100, 100)) == "centre"
    assert zone_of(patch_radius(0, 0, 10, 10, 100, 100)) == "corner"
    assert zone_of(0.5) == "mid"


def test_unknown_method_is_a_clear_error(toy_data):
    with pytest.raises(ValueError, match="magic"):
        evaluate_methods(toy_data, ["magic"], progress=False)


def test_reader_reads_a_dataset_written_by_degtrans_simulate(tmp_path):
    """The contract end to end: ``degtrans simulate``'s own writer, this reader."""
    import numpy as np

    from degtrans.config import SimulateConfig
    from degtrans.io import write_image
    from degtrans.simulate.dataset import build_dataset
    from degtrans.testing.synthetic import gaussian_field

    rng = np.random.default_rng(0)
    images = [write_image(tmp_path / "img" / f"i{i}.png", rng.random((40, 56, 3))) for i in range(2)]
    field = gaussian_field(grid=(2, 2), psf_size=5, image_size=(40, 56), camera="camA").save(
        tmp_path / "camA.npz"
    )
    config = SimulateConfig(patch_size=16, patches_per_image=2, rows_per_file=2, row_group_rows=2)
    build_dataset(images, [field], tmp_path / "out", config)
    reader = PairReader(tmp_path / "out", val_fraction=0.0, with_psf=True)
    batch = next(reader.batches("all", 8, shuffle=False))
    assert batch["degraded"].shape == (4, 3, 16, 16) and batch["psf"].shape == (4, 3, 5, 5)
    assert torch.all((batch["clean"] >= 0) & (batch["clean"] <= 1))
    assert reader.count("train") == 4


def test_frame_scores_partition_the_frame_into_zones():
    from degtrans.restore.evaluate import frame_scores, zone_map

    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 64, 96, generator=gen)
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    scores = frame_scores(noisy, clean)
    assert set(scores) == set(ZONES)
    assert scores["all"][0] == pytest.approx(float(psnr(noisy[None], clean[None])[0]), abs=1e-4)
    zones = zone_map(64, 96)
    assert zones[0] == "corner" and zones[32 * 96 + 48] == "centre"
    # The zones' squared errors add up to the frame's.
    mse = {z: 10 ** (-scores[z][0] / 10) for z in ZONES[1:]}
    counts = {z: zones.count(z) for z in ZONES[1:]}
    total = sum(mse[z] * counts[z] for z in mse) / len(zones)
    assert 10 * math.log10(1 / total) == pytest.approx(scores["all"][0], abs=1e-3)


def test_held_out_frames_from_the_command_line(tmp_path, capsys):
    """``degtrans evaluate --frames``: whole frames of the dataset's camera, training images left out."""
    import numpy as np

    from degtrans.cli import main
    from degtrans.config import SimulateConfig
    from degtrans.io import write_image
    from degtrans.simulate.dataset import build_dataset
    from degtrans.testing.synthetic import gaussian_field
    from degtrans.testing.toydata import toy_frame

    rng = np.random.default_rng(0)
    images = [write_image(tmp_path / "img" / f"i{i}.png", toy_frame(48, 64, rng)) for i in range(2)]
    for i in range(2):
        write_image(tmp_path / "held" / f"h{i}.png", toy_frame(48, 64, rng))
    field = gaussian_field(grid=(2, 2), psf_size=5, image_size=(48, 64), camera="camA").save(
        tmp_path / "camA.npz"
    )
    config = SimulateConfig(patch_size=16, patches_per_image=2, rows_per_file=4, row_group_rows=4)
    build_dataset([tmp_path / "img"], [field], tmp_path / "data", config)
    png = tmp_path / "crops.png"
    args = ["evaluate", "--data", str(tmp_path / "data"), "--method", "identity", "--method", "wiener",
            "--frames", str(tmp_path / "held"), "--frames", str(images[0]), "--set", "train.val_fraction=0",
            "-o", str(png)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "left out (in the training split): i0" in out
    assert "(n=2)" in out and "wiener" in out and png.read_bytes()[:4] == b"\x89PNG"


def test_frame_restorers_restore_as_a_photograph_without_side_info(tmp_path):
    """``side_info=False`` gives the network neither the frame's noise nor its ISP draw, as a photograph."""
    import numpy as np
    import torch

    from degtrans.config import SimulateConfig, TrainConfig
    from degtrans.restore.checkpoint import save_checkpoint
    from degtrans.restore.evaluate import frame_restorers, simulate_frame
    from degtrans.restore.infer import restore_array
    from degtrans.restore.models import build_model
    from degtrans.simulate.camera import CameraProfile, bundled_profiles
    from degtrans.testing.synthetic import gaussian_field

    field = gaussian_field(grid=(2, 2), psf_size=7, image_size=(32, 32), sigma_centre=1.0, sigma_corner=1.5)
    image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    frame = simulate_frame(
        image, "f", "cam", field, CameraProfile.bundled(bundled_profiles()[0]), SimulateConfig()
    )
    net = build_model(TrainConfig(model="wiener", amp=False))
    checkpoint = save_checkpoint(
        tmp_path / "net.pt", net, None, None, 0, TrainConfig(model="wiener", amp=False)
    )
    method = [f"ckpt:{checkpoint}"]
    known = next(iter(frame_restorers(method, {"cam": field}).values()))(frame)
    blind = next(iter(frame_restorers(method, {"cam": field}, side_info=False).values()))(frame)
    photo = restore_array(
        frame.degraded.permute(1, 2, 0).numpy(), model=net.eval(), field=field, progress=False
    )
    assert torch.equal(blind, torch.from_numpy(photo).permute(2, 0, 1))
    assert not torch.equal(known, blind)
