"""Targets (broadband, deterministic, 16-bit files), pair discovery, and the stage I colour/tone fit."""

import numpy as np
import pytest

from degtrans.calibrate.photos import find_pairs
from degtrans.calibrate.targets import make_target, make_targets
from degtrans.calibrate.transfer import ToneColour, fit_tone_colour, linearise, to_camera
from degtrans.io import read_image, write_image


def test_make_targets_writes_readable_16bit_files(tmp_path):
    paths = make_targets(tmp_path, n=3, size=(48, 64), seed=2)
    assert [p.name for p in paths] == ["target_000_noise.png", "target_001_noise.png", "target_002_edges.png"]
    image = read_image(paths[0])
    assert image.shape == (48, 64, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    # 16-bit: many more distinct levels than 8 bits could hold.
    assert np.unique(image).size > 256
    np.testing.assert_array_equal(
        read_image(make_targets(tmp_path / "again", n=1, size=(48, 64), seed=2)[0]), image
    )


@pytest.mark.parametrize("kind", ["noise", "edges", "checker"])
def test_targets_are_broadband(kind):
    image = make_target(kind, (128, 128), seed=0)[..., 1].astype(np.float64)
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128), indexing="ij"))
    # A measurable share of the energy above 0.15 cycles/px: narrow PSFs stay identifiable.
    assert power[f > 0.15].sum() / power.sum() > 0.02


def test_make_target_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        make_target("stripes", (64, 64))
    with pytest.raises(ValueError, match="kinds"):
        make_targets(tmp_path, n=1, kinds=("stripes",))


def test_find_pairs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        find_pairs(tmp_path / "missing")
    write_image(tmp_path / "a.target.png", np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="no calibration pairs"):
        find_pairs(tmp_path)
    write_image(tmp_path / "a.photo.tif", np.zeros((8, 8, 3)))
    assert find_pairs(tmp_path) == [("a", tmp_path / "a.target.png", tmp_path / "a.photo.tif")]


def test_tone_colour_fit_recovers_gamma_and_matrix():
    rng = np.random.default_rng(0)
    target = make_target("noise", (160, 160), seed=4)
    truth = ToneColour(
        gamma=np.array([2.2, 1.8, 1.0]),
        matrix=np.array([[0.8, 0.15, 0.0], [0.05, 0.9, 0.05], [0.0, 0.1, 0.7]]),
        offset=np.array([0.02, 0.01, 0.03]),
    )
    linear = to_camera(target, truth) + rng.normal(0, 0.002, target.shape).astype(np.float32)
    photo = np.clip(linear, 0, 1) ** (1.0 / truth.gamma).astype(np.float32)
    fitted = fit_tone_colour(target, photo, np.ones(target.shape[:2], bool), sigma=4.0)
    np.testing.assert_allclose(fitted.gamma, truth.gamma, atol=0.06)
    np.testing.assert_allclose(fitted.matrix, truth.matrix, atol=0.03)
    # Linearised photo and camera-mapped target agree (what stage II relies on).
    assert np.abs(linearise(photo, fitted) - to_camera(target, fitted)).mean() < 0.01


def test_tone_colour_fit_on_a_non_square_frame():
    target = make_target("noise", (96, 160), seed=5)
    truth = ToneColour(np.array([2.0, 2.0, 2.0]), np.eye(3) * 0.9, np.full(3, 0.02))
    photo = np.clip(to_camera(target, truth), 0, 1) ** 0.5
    fitted = fit_tone_colour(target, photo.astype(np.float32), np.ones(target.shape[:2], bool), sigma=4.0)
    np.testing.assert_allclose(fitted.gamma, truth.gamma, atol=0.06)
    np.testing.assert_allclose(fitted.matrix, truth.matrix, atol=0.03)


def test_raw_photo_is_read_linear(tmp_path):
    """A RAW photograph enters stage I in linear light: twice the exposure reads twice as bright."""
    import tifffile

    from tests.simulate.test_camera import write_dng

    black, white, neutral = 512, 16383, (0.5, 1.0, 0.7)
    means = []
    for exposure in (0.2, 0.4):
        path = write_dng(tmp_path / f"grey{exposure}.dng", black=black, white=white, neutral=neutral)
        levels = [black + exposure * neutral[i] * (white - black) for i in (0, 1, 1, 2)]  # RGGB
        mosaic = np.tile(np.reshape(levels, (2, 2)), (16, 24)).round().astype(np.uint16)
        data = bytearray(path.read_bytes())
        offset = tifffile.TiffFile(path).pages[0].dataoffsets[0]
        data[offset : offset + mosaic.nbytes] = mosaic.tobytes()
        path.write_bytes(bytes(data))
        image = read_image(path)
        assert image.shape[-1] == 3 and image.dtype == np.float32
        means.append(image[8:-8, 8:-8].mean(axis=(0, 1)))
    np.testing.assert_allclose(means[1] / means[0], 2.0, rtol=0.02)
