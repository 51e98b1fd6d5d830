import numpy as np
import pytest
import torch

from degtrans.config import (
    MOVED,
    FOVKPNConfig,
    OptimConfig,
    RestoreConfig,
    TrainConfig,
    WienerConfig,
    to_dict,
)
from degtrans.io import read_image, write_image
from degtrans.metrics import psnr, ssim
from degtrans.restore.baselines import deconvolve_field, richardson_lucy, wiener_filter
from degtrans.restore.checkpoint import load_checkpoint, save_checkpoint
from degtrans.restore.coords import fov_coords
from degtrans.restore.infer import (
    flip_ensemble,
    model_tile_fn,
    ramp_window,
    restore_image,
    restore_tiled,
    tile_origins,
)
from degtrans.restore.models import build_model
from degtrans.simulate.isp import linear_to_srgb, srgb_to_linear
from degtrans.testing.synthetic import gaussian_field, identity_field


def _photo(height: int = 45, width: int = 70) -> np.ndarray:
    return np.random.default_rng(0).random((height, width, 3)).astype(np.float32)


@pytest.mark.parametrize("tile,overlap,max_tiles", [(16, 4, 1), (20, 7, 3), (64, 8, 8), (100, 10, 2)])
def test_tiled_inference_with_an_identity_model_is_exact(tile, overlap, max_tiles):
    image = _photo()
    seen = []

    def identity(tiles, origins):
        seen.append(len(origins))
        return tiles

    out = restore_tiled(image, identity, tile, overlap, max_tiles, progress=False)
    np.testing.assert_allclose(out, image, rtol=0, atol=1e-6)
    assert max(seen) <= max_tiles


def test_tiles_cover_the_frame_with_the_overlap():
    for length, tile, overlap in [(45, 16, 4), (100, 32, 8), (10, 32, 8), (64, 32, 0)]:
        starts = tile_origins(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + min(tile, length) == length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))
    assert (ramp_window(20, 5) > 0).all() and ramp_window(20, 5)[10] == 1.0


def test_every_tile_gets_its_true_field_coordinates():
    """A 'model' that outputs its coordinate channels restores to the frame's own coordinate map."""

    class CoordsEcho(torch.nn.Module):
        needs_psf = False

        def forward(self, degraded, coords, psf=None, noise=None, isp=None):
            return (coords + 1.0) / 2.0  # x, y in [-1, 1] -> [0, 1]; r is already in [0, 1]

    image = _photo(40, 52)
    fn = model_tile_fn(CoordsEcho(), (40, 52), None, torch.device("cpu"))
    out = restore_tiled(image, fn, tile=16, overlap=6, max_tiles=4, progress=False)
    expected = ((fov_coords(0, 0, 40, 52, 40, 52)[0] + 1.0) / 2.0).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_self_ensemble_restores_mirror_images_at_the_mirrored_coordinates():
    """Echoed coordinates average out in x and y (each mirror sits at -x or -y); r is unchanged."""

    class CoordsEcho(torch.nn.Module):
        def forward(self, degraded, coords, psf=None, noise=None, isp=None):
            return (coords + 1.0) / 2.0

    fn = model_tile_fn(CoordsEcho(), (40, 52), None, torch.device("cpu"), self_ensemble=True)
    out = restore_tiled(_photo(40, 52), fn, tile=16, overlap=6, max_tiles=4, progress=False)
    radius = ((fov_coords(0, 0, 40, 52, 40, 52)[0, 2] + 1.0) / 2.0).numpy()
    np.testing.assert_allclose(out[..., :2], 0.5, atol=1e-6)
    np.testing.assert_allclose(out[..., 2], radius, atol=1e-6)


def test_self_ensemble_of_a_model_that_follows_its_psfs_is_exact():
    """A 'model' that blurs with the bilinear blend of its (asymmetric) corner PSFs and adds a radial
    term is mirror-equivariant: each mirror image, restored under flipped and swapped corner PSFs and
    flipped back, gives the same result, so the ensemble equals one pass. Swapping the corners wrongly
    (or not flipping the PSFs) breaks it."""
    from degtrans.restore.models.wiener import corner_weights

    class BlendedBlur(torch.nn.Module):
        def forward(self, degraded, coords, psf=None, noise=None, isp=None):
            batch, channels, height, width = degraded.shape
            padded = torch.nn.functional.pad(degraded, (2, 2, 2, 2), mode="reflect")
            out = 0.1 * coords[:, 2:]
            for corner, weight in enumerate(corner_weights(height, width).unbind(1)):
                kernels = psf[:, corner].reshape(batch * channels, 1, 5, 5)
                blurred = torch.nn.functional.conv2d(padded.reshape(1, -1, height + 4, width + 4), kernels,
                                                     groups=batch * channels)  # fmt: skip
                out = out + weight * blurred.view(batch, channels, height, width)
            return out

    generator = torch.Generator().manual_seed(0)
    tiles = torch.rand(2, 3, 11, 14, generator=generator)
    coords = fov_coords(torch.tensor([0, 20]), torch.tensor([5, 30]), 40, 52, 11, 14)
    psf = torch.rand(2, 4, 3, 5, 5, generator=generator)
    model = BlendedBlur()
    plain = model(tiles, coords, psf)
    torch.testing.assert_close(flip_ensemble(model, tiles, coords, psf), plain, atol=1e-5, rtol=0)
    unswapped = torch.stack([model(tiles.flip(-1), coords, psf.flip(-1)).flip(-1), plain]).mean(0)
    assert (unswapped - plain).abs().max() > 1e-2


def test_restore_image_round_trips_16_bit_png_and_tiff(tmp_path):
    image = _photo()
    for name in ("in.png", "in.tif"):
        path = write_image(tmp_path / name, image)
        assert np.abs(read_image(path) - image).max() <= 0.5 / 65535 + 1e-7
        out = restore_image(path, tmp_path / f"out-{name}", method="identity", progress=False)
        np.testing.assert_array_equal(read_image(out), read_image(path))


@pytest.mark.parametrize("self_ensemble", [False, True])
def test_restore_image_with_an_untrained_fovkpn_checkpoint_is_the_input(tmp_path, self_ensemble):
    config = TrainConfig(width=4, fovkpn=FOVKPNConfig(offset_channels=4))
    checkpoint = save_checkpoint(tmp_path / "best.pt", build_model(config), None, None, 0, config)
    photo = write_image(tmp_path / "photo.png", _photo())
    restore = RestoreConfig(tile_size=32, overlap=8, self_ensemble=self_ensemble)
    out = restore_image(photo, tmp_path / "out.png", checkpoint, config=restore, progress=False)
    assert np.abs(read_image(out) - read_image(photo)).max() <= 1.0 / 65535


def test_a_checkpoint_with_the_older_flat_config_still_restores(tmp_path):
    """Checkpoints written before the sub-sections store ``learning_rate``, ``offset_channels`` ... flat."""
    config = TrainConfig(
        width=4, fovkpn=FOVKPNConfig(offset_channels=4), optim=OptimConfig(learning_rate=1e-3)
    )
    path = save_checkpoint(tmp_path / "old.pt", build_model(config), None, None, 0, config)
    moved_from = {
        new.split(".", 1)[1]: old.split(".", 1)[1] for old, new in MOVED.items() if old.startswith("train.")
    }
    nested = to_dict(config)
    flat = {k: v for k, v in nested.items() if not isinstance(v, dict)}
    flat |= {
        moved_from[f"{k}.{n}"]: v
        for k, sub in nested.items()
        if isinstance(sub, dict)
        for n, v in sub.items()
    }
    state = torch.load(path, weights_only=False)
    torch.save({**state, "config": flat}, path)
    assert {"offset_channels", "wiener_features"} <= set(flat) and load_checkpoint(path)[
        "train_config"
    ] == config
    photo = write_image(tmp_path / "photo.png", _photo())
    restore = RestoreConfig(tile_size=32, overlap=8)
    out = restore_image(photo, tmp_path / "out.png", path, config=restore, progress=False)
    assert np.abs(read_image(out) - read_image(photo)).max() <= 1.0 / 65535


def test_bad_inputs_name_the_file(tmp_path):
    photo = write_image(tmp_path / "photo.png", _photo())
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="junk.png"):
        restore_image(junk, tmp_path / "o.png", method="identity", progress=False)
    wrong = gaussian_field(grid=(2, 2), psf_size=5, image_size=(64, 64)).save(tmp_path / "wrong.npz")
    with pytest.raises(ValueError, match="wrong.npz.*64x64"):
        restore_image(photo, tmp_path / "o.png", field=wrong, method="wiener", progress=False)
    config = TrainConfig(model="wiener", width=4, wiener=WienerConfig(features=6))
    checkpoint = save_checkpoint(tmp_path / "wiener.pt", build_model(config), None, None, 0, config)
    with pytest.raises(ValueError, match="wiener.pt.*field"):
        restore_image(photo, tmp_path / "o.png", checkpoint, progress=False)
    with pytest.raises(ValueError, match="junk.png"):
        restore_image(photo, tmp_path / "o.png", junk, progress=False)


# classical baselines


def test_rl_with_a_delta_psf_returns_the_input():
    image = torch.from_numpy(_photo(30, 40)).permute(2, 0, 1).double()
    delta = torch.from_numpy(identity_field((1, 1), 5, (30, 40)).psfs[0, 0])
    torch.testing.assert_close(richardson_lucy(image, delta, 5), image, atol=1e-5, rtol=0)


def test_uniform_field_blending_matches_one_global_deconvolution():
    """With one PSF everywhere the per-tile results are the same filter: the blend is that filter."""
    image = torch.from_numpy(_photo(36, 48)).permute(2, 0, 1).double()
    one = gaussian_field(grid=(1, 1), psf_size=5, image_size=(36, 48), sigma_centre=1.0, sigma_corner=1.0)
    tiled = identity_field((2, 3), 5, (36, 48))
    tiled = type(tiled)(np.broadcast_to(one.psfs, tiled.psfs.shape), (36, 48))
    psf = torch.from_numpy(one.psfs[0, 0]).double()
    global_rl = linear_to_srgb(richardson_lucy(srgb_to_linear(image), psf, 5))
    # discrepancy 0: no tile stops early, every region runs the same 5 iterations.
    blended = deconvolve_field(image, tiled, "rl", iterations=5, rl_discrepancy=0.0)
    # Regions end 2k from the frame edge of their tile; RL's support spreads 5 * k / 2 per side: the
    # centre of each tile sees the same data as the global run.
    torch.testing.assert_close(blended[:, 14:22, 18:30], global_rl[:, 14:22, 18:30], atol=2e-3, rtol=0)
    assert torch.isfinite(wiener_filter(image, psf.expand(3, 5, 5), torch.full((3,), 1e-4))).all()


def test_baselines_improve_a_blurred_patch(toy_data):
    from degtrans.restore.data import PairReader

    reader = PairReader(toy_data, with_psf=True)
    batch = next(reader.batches("all", 6, shuffle=False))
    field = reader.fields["camA"]
    origins = [(int(y), int(x)) for y, x in zip(batch["y0"], batch["x0"], strict=True)]
    before = psnr(batch["degraded"], batch["clean"]).mean()
    for method, gain in (("wiener", 0.3), ("rl", -0.05)):  # RL stops early under noise: near the input
        restored = torch.stack(
            [deconvolve_field(batch["degraded"][i], field, method, offset=o) for i, o in enumerate(origins)]
        )
        assert psnr(restored, batch["clean"]).mean() > before + gain, method
        assert ssim(restored, batch["clean"]).mean() > 0.5


def test_tiles_get_the_frames_noise_level_and_isp():
    """Simulated frames know their noise and ISP: every tile is given them, as in training."""

    class NoiseEcho(torch.nn.Module):
        needs_psf = False

        def forward(self, degraded, coords, psf=None, noise=None, isp=None):
            value = noise[:, 0] * 100 + isp[:, 0]
            return value[:, None, None, None].expand_as(degraded)

    noise, isp = torch.tensor([0.003, 1e-5]), torch.full((12,), 0.2)
    fn = model_tile_fn(NoiseEcho(), (40, 52), None, torch.device("cpu"), noise, isp)
    out = restore_tiled(_photo(40, 52), fn, tile=16, overlap=6, max_tiles=4, progress=False)
    np.testing.assert_allclose(out, 0.5, atol=1e-6)
