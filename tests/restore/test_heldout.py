"""A short training run beats the identity on images it never saw (whole source images held out)."""

import pytest

from degtrans.config import FOVKPNConfig, OptimConfig, TrainConfig, WienerConfig
from degtrans.restore.checkpoint import save_checkpoint
from degtrans.restore.data import PairReader
from degtrans.restore.evaluate import evaluate_methods
from degtrans.restore.loop import Budget, fit, make_optimizer
from degtrans.restore.models import build_model
from degtrans.testing.synthetic import gaussian_field
from degtrans.testing.toydata import write_toy_dataset

VAL_FRACTION = 0.3  # of six toy frames, frame0003 and frame0005 are held out whole


@pytest.fixture(scope="module")
def six_frames(tmp_path_factory):
    field = gaussian_field(grid=(2, 3), psf_size=7, image_size=(64, 96), sigma_centre=1.0, sigma_corner=1.8)
    out = tmp_path_factory.mktemp("heldout") / "data"
    return write_toy_dataset(out, field, frames=6, patches_per_frame=8, patch_size=24, seed=2)


# Gain (dB) over the input each network must show after these 80 steps. Measured: deep Wiener clears
# +0.5 dB; FOV-KPN, whose kernel head starts as the identity, reached +0.13 dB (lr 1e-3), so its bar is
# only that it is better than doing nothing.
MIN_GAIN_DB = {"wiener": 0.5, "fovkpn": 0.0}


@pytest.mark.parametrize("model", ["wiener", "fovkpn"])
def test_a_short_run_beats_the_identity_on_held_out_images(six_frames, tmp_path, model):
    lr = {"wiener": 3e-3, "fovkpn": 1e-3}[model]  # the undamped kernel head spikes above ~2e-3 without warmup
    config = TrainConfig(
        model=model,
        width=8,
        batch_size=8,
        amp=False,
        fovkpn=FOVKPNConfig(offset_channels=8),
        wiener=WienerConfig(features=6),
        optim=OptimConfig(learning_rate=lr),
    )
    reader = PairReader(six_frames, val_fraction=VAL_FRACTION, with_psf=True)
    train_sources = {s.split("/")[1] for b in reader.batches("train", 64) for s in b["sample_id"]}
    val_sources = {s.split("/")[1] for b in reader.batches("val", 64) for s in b["sample_id"]}
    assert val_sources and train_sources.isdisjoint(val_sources)
    net = build_model(config)
    optimizer = make_optimizer(net, config.optim)
    fit(net, lambda epoch: reader.batches("train", 8, seed=0, epoch=epoch), optimizer, config,
        Budget(epochs=20))  # fmt: skip
    checkpoint = save_checkpoint(tmp_path / "net.pt", net, optimizer, None, 20, config)
    rows = evaluate_methods(six_frames, ["identity", f"ckpt:{checkpoint}"], "val", val_fraction=VAL_FRACTION,
                            progress=False)  # fmt: skip
    overall = {r["method"]: r["psnr"] for r in rows if r["zone"] == "all"}
    identity = overall.pop("identity")
    assert next(iter(overall.values())) > identity + MIN_GAIN_DB[model], (overall, identity)
