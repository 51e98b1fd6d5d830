"""Targets (broadband, deterministic, 16-bit files), pair discovery, and the stage I colour/tone fit."""

import numpy as np
import pytest

from degtrans.calibrate.photos import find_pairs
from degtrans.calibrate.targets import make_target, make_targets
from degtrans.calibrate.transfer import ToneColour, ToneFitError, fit_tone_colour, linearise, to_camera
from degtrans.io import read_image, write_image


def test_make_targets_writes_readable_16bit_files(tmp_path):
    paths = make_targets(tmp_path, n=3, size=(48, 64), seed=2, kinds=("noise", "noise", "edges"))
    assert [p.name for p in paths] == ["target_000_noise.png", "target_001_noise.png", "target_002_edges.png"]
    image = read_image(paths[0])
    assert image.shape == (48, 64, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    # 16-bit: many more distinct levels than 8 bits could hold.
    assert np.unique(image).size > 256
    np.testing.assert_array_equal(
        read_image(make_targets(tmp_path / "again", n=1, size=(48, 64), seed=2, kinds=("noise",))[0]), image
    )


@pytest.mark.parametrize("kind", ["noise", "edges", "checker"])
def test_targets_are_broadband(kind):
    image = make_target(kind, (128, 128), seed=0)[0][..., 1].astype(np.float64)
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
    target, _ = make_target("noise", (160, 160), seed=4)
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
    target, _ = make_target("noise", (96, 160), seed=5)
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


# Charts and stage I from their patches ----------------------------------------------------------------


def test_chart_layout_matches_the_image_and_markers_are_detected(tmp_path):
    import cv2

    from degtrans.calibrate.targets import aruco_dictionary, read_layout

    (path,) = make_targets(tmp_path, n=1, size=(192, 256), seed=3)
    image, layout = read_image(path), read_layout(path)
    assert path.name == "target_000_calib.png" and layout.kind == "calib" and layout.size == (192, 256)
    assert len(layout.markers) == 8 and len(layout.patches) == 16
    for patch in layout.patches:
        x0, y0, x1, y1 = patch.rect
        # 16-bit files: the patch value comes back to within one 16-bit step.
        np.testing.assert_allclose(
            image[y0:y1, x0:x1].reshape(-1, 3), np.tile(patch.rgb, ((x1 - x0) * (y1 - y0), 1)), atol=1e-4
        )
    detector = cv2.aruco.ArucoDetector(aruco_dictionary(layout.dictionary), cv2.aruco.DetectorParameters())
    corners, ids, _ = detector.detectMarkers((image.mean(axis=-1) * 255).astype(np.uint8))
    assert ids is not None and set(ids.ravel()) <= {m.id for m in layout.markers} and len(ids) >= 6
    expected = {m.id: np.asarray(m.corners) for m in layout.markers}
    for marker_id, quad in zip(ids.ravel(), corners, strict=True):
        assert np.abs(quad.reshape(4, 2) - expected[int(marker_id)]).max() < 1.0


def test_patterns_after_a_chart_share_its_pose(tmp_path):
    from degtrans.calibrate.targets import read_layout

    paths = make_targets(tmp_path, n=5, size=(160, 224), seed=0, kinds=("calib", "noise", "noise"))
    layouts = [read_layout(p) for p in paths]
    assert [p.stem for p in paths] == [
        "target_000_calib",
        "target_001_noise",
        "target_002_noise",
        "target_003_calib",
        "target_004_noise",
    ]
    assert [lay.pose for lay in layouts] == [0, 0, 0, 1, 1]
    assert [lay.geometry_from for lay in layouts] == [
        None,
        "target_000_calib",
        "target_000_calib",
        None,
        "target_003_calib",
    ]
    # Each chart has its own marker ids: a photo of one chart is never taken for another.
    assert not {m.id for m in layouts[0].markers} & {m.id for m in layouts[3].markers}
    # Without charts every target is its own pose.
    plain = [read_layout(p) for p in make_targets(tmp_path / "plain", n=3, size=(48, 64), kinds=("noise",))]
    assert [lay.pose for lay in plain] == [0, 1, 2] and all(lay.geometry_from is None for lay in plain)


def test_noise_reaches_its_band_limit_in_each_axis():
    image = make_target("noise", (256, 256), seed=1, band_limit=0.45)[0][..., 1].astype(np.float64)
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2
    fy, fx = np.meshgrid(np.abs(np.fft.fftfreq(256)), np.abs(np.fft.fftfreq(256)), indexing="ij")
    mid = power[(np.maximum(fy, fx) > 0.18) & (np.maximum(fy, fx) < 0.22)].mean()
    # Broadband: just below the limit there is still a sizeable share of the mid band's power per
    # frequency, on the axes and in the corners of the frequency square alike (a square band: a radial
    # one leaves the corners, beyond radius 0.45, empty).
    axes = power[(fx > 0.38) & (fx < 0.42) & (fy < 0.05)].mean() / mid
    corner = power[(fx > 0.38) & (fx < 0.42) & (fy > 0.38) & (fy < 0.42)].mean() / mid
    assert axes > 0.2 and corner > 0.1, (axes, corner)
    low = make_target("noise", (256, 256), seed=1, band_limit=0.2)[0][..., 1].astype(np.float64)
    power_low = np.abs(np.fft.fft2(low - low.mean())) ** 2
    assert power_low[(fx > 0.38) & (fx < 0.42)].mean() / power_low[(fx > 0.18) & (fx < 0.22)].mean() < 1e-3


def test_photograph_resamples_the_target_once():
    """A field whose distortion map is a constant half-pixel shift photographs the target as the same
    field without the map does through the shifted homography: the map is composed into the sampling
    coordinates, not applied to the warped target by a second interpolation (which would damp the
    highest frequencies of a noise target, unlike the fit's single resampling)."""
    from degtrans.calibrate.photos import HiddenCamera, photograph
    from degtrans.field import PSFField

    frame = (64, 80)
    target = make_target("noise", frame, seed=4)[0]
    psfs = np.zeros((1, 1, 3, 3, 3), np.float32)
    psfs[..., 1, 1] = 1.0
    shift = np.zeros((2, 2, 2), np.float32)
    shift[..., 1] = 0.5  # (dy, dx): every point lands half a pixel to the right
    homography = np.array([[1.0, 0.02, 1.5], [-0.01, 1.0, -2.0], [0.0, 0.0, 1.0]])
    moved = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ homography
    camera = HiddenCamera(noise=0.0)
    rng = np.random.default_rng(0)
    mapped = photograph(target, PSFField(psfs, frame, distortion=shift), homography, camera, rng)
    plain = photograph(target, PSFField(psfs, frame), moved, camera, rng)
    inner = (slice(4, -4), slice(4, -4))
    # Both quantise coordinates to 1/32 px (cv2.remap): 0.002 apart; resampled twice: 0.15.
    assert np.abs(mapped[inner] - plain[inner]).max() < 0.01


@pytest.fixture(scope="module")
def chart():
    from degtrans.testing.synthetic import gaussian_field

    target, layout = make_target("calib", (192, 256), seed=1)
    field = gaussian_field((3, 3), 11, (192, 256), sigma_centre=0.8, sigma_corner=2.0)
    return target, layout, field


def _photograph_chart(chart, camera, seed=0):
    from degtrans.calibrate.photos import jitter_homography, photograph
    from degtrans.calibrate.register import coarse_geometry

    target, layout, field = chart
    rng = np.random.default_rng(seed)
    homography = jitter_homography(target.shape[:2], field.image_size, 2.0, rng)
    photo = photograph(target, field, homography, camera, rng)
    geometry, _, _ = coarse_geometry(target, photo, layout)
    return photo, geometry, layout


IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def test_stage_one_on_a_linear_photo_is_linear_and_identity(chart):
    from degtrans.calibrate.photos import HiddenCamera
    from degtrans.calibrate.transfer import fit_patches, patch_samples

    photo, geometry, layout = _photograph_chart(
        chart, HiddenCamera(IDENTITY, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 0.003)
    )
    # The coarse (marker) geometry is enough: the margin covers the PSF's reach and its error.
    fitted = fit_patches(patch_samples(photo, geometry, layout, margin=11 // 2 + 4))
    np.testing.assert_allclose(fitted.gamma, 1.0, atol=0.02)
    np.testing.assert_allclose(fitted.matrix, np.eye(3), atol=0.02)
    np.testing.assert_allclose(fitted.offset, 0.0, atol=0.01)
    raw = fit_patches(patch_samples(photo, geometry, layout, margin=9), fit_gamma=False)
    np.testing.assert_array_equal(raw.gamma, 1.0)
    np.testing.assert_allclose(raw.matrix, np.eye(3), atol=0.02)


@pytest.mark.parametrize("gamma", [(2.2, 2.2, 2.2), (1.8, 2.0, 2.4)])
def test_stage_one_recovers_a_gamma_encoded_photo(chart, gamma):
    from degtrans.calibrate.photos import HiddenCamera
    from degtrans.calibrate.transfer import fit_patches, patch_samples

    camera = HiddenCamera(gamma=gamma, noise=0.003)
    photo, geometry, layout = _photograph_chart(chart, camera, seed=1)
    fitted = fit_patches(patch_samples(photo, geometry, layout, margin=9))
    np.testing.assert_allclose(fitted.gamma, gamma, atol=0.05)
    np.testing.assert_allclose(fitted.matrix, camera.colour_matrix, atol=0.02)
    np.testing.assert_allclose(fitted.offset, camera.offset, atol=0.01)


def test_stage_one_refuses_too_few_patches(chart):
    from degtrans.calibrate.transfer import PatchSamples, fit_patches

    samples = PatchSamples(np.full((4, 3), 0.5), np.full((4, 3), 0.5))
    with pytest.raises(ToneFitError, match="unsaturated patches"):
        fit_patches(samples)


def test_stage_one_through_prepare_pair_with_a_target_larger_than_the_frame(tmp_path):
    """The whole path (markers, patch margins converted from photo to target pixels, about 2 target
    pixels per photo pixel here, stage I) on a linear photo: gamma 1 and the identity matrix."""
    from degtrans.calibrate.photos import HiddenCamera, synthesize_pairs
    from degtrans.calibrate.prepare import PreparedPair, prepare_pair
    from degtrans.config import CalibrateConfig
    from degtrans.testing.synthetic import gaussian_field

    targets = make_targets(tmp_path / "targets", n=1, size=(384, 512), seed=4)
    field = gaussian_field((2, 3), 15, (192, 256), sigma_centre=1.5, sigma_corner=2.0)
    camera = HiddenCamera(IDENTITY, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    synthesize_pairs(targets, field, tmp_path / "pairs", seed=0, noise=0.003, camera=camera)
    pair = prepare_pair(
        "target_000_calib",
        tmp_path / "pairs" / "target_000_calib.target.png",
        tmp_path / "pairs" / "target_000_calib.photo.png",
        CalibrateConfig(rows=2, cols=3, psf_size=15),
        (2, 3),
    )
    assert isinstance(pair, PreparedPair), pair
    np.testing.assert_allclose(pair.tone.gamma, 1.0, atol=0.02)
    np.testing.assert_allclose(pair.tone.matrix, np.eye(3), atol=0.02)


def test_colour_refit_through_the_psfs_recovers_the_matrix(chart):
    """With a PSF estimate, every pixel is a sample of the colour relation: the matrix and offset come
    back exactly from a photo of the blurred, colour-mixed chart, whatever spatially variant blur."""
    import torch

    from degtrans.calibrate.prepare import refit_colour
    from degtrans.kernels import sv_conv2d

    target, _, field = chart
    matrix = np.array([[0.82, 0.12, 0.02], [0.06, 0.86, 0.05], [0.02, 0.1, 0.8]])
    offset = np.array([0.02, 0.02, 0.03])
    mixed = target @ matrix.T.astype(np.float32) + offset.astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(mixed.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        photo = sv_conv2d(x, torch.from_numpy(field.psfs))[0].numpy().transpose(1, 2, 0)
    mask = np.ones(target.shape[:2], bool)
    tone = refit_colour(target, photo, mask, field, ToneColour.identity(), 11)
    np.testing.assert_allclose(tone.matrix, matrix, atol=1e-3)
    np.testing.assert_allclose(tone.offset, offset, atol=1e-3)
    np.testing.assert_array_equal(tone.gamma, np.ones(3))
