import json

import numpy as np
import pytest

from degtrans.calibrate.inspect import second_moment_radius, summary
from degtrans.field import PSFField
from degtrans.testing.synthetic import gaussian_field, gaussian_psf


@pytest.fixture
def field():
    return gaussian_field(grid=(3, 4), psf_size=9, image_size=(60, 80))


def test_round_trip_is_exact(tmp_path, field):
    path = field.save(tmp_path / "cam.npz")
    loaded = PSFField.load(path)
    assert np.array_equal(loaded.psfs, field.psfs)
    assert loaded.image_size == field.image_size
    assert loaded.channels == field.channels
    assert loaded.domain == "linear_rgb"
    assert loaded.meta == field.meta


def test_plain_numpy_can_read_it(tmp_path, field):
    path = field.save(tmp_path / "cam.npz")
    with np.load(path) as data:
        assert data["psfs"].shape == (3, 4, 3, 9, 9)
        assert json.loads(str(data["meta"]))["image_size"] == [60, 80]


def _write(path, psfs, meta=None):
    meta = (
        meta
        if meta is not None
        else json.dumps(
            {
                "format_version": 1,
                "image_size": [60, 80],
                "channels": ["R", "G", "B"],
                "domain": "linear_rgb",
                "meta": {},
            }
        )
    )
    np.savez(path, psfs=psfs, meta=np.array(meta))
    return path


def _valid_psfs(k=5):
    psfs = np.zeros((2, 2, 3, k, k), np.float32)
    psfs[..., k // 2, k // 2] = 1
    return psfs


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: p[0], "rank 5"),
        (lambda p: np.zeros((2, 2, 3, 4, 4), np.float32) + 1 / 16, "odd"),
        (lambda p: np.where(np.arange(5) == 0, -0.1, p).astype(np.float32), "non-negative|sum to 1"),
        (lambda p: p * 1.01, "sum to 1"),
        (lambda p: np.where(p == 1, np.nan, p).astype(np.float32), "NaN"),
    ],
    ids=["rank", "even-k", "negative", "not-normalised", "nan"],
)
def test_invalid_fields_are_rejected_with_file_name(tmp_path, mutate, message):
    path = _write(tmp_path / "bad.npz", mutate(_valid_psfs()))
    with pytest.raises(ValueError, match=message) as info:
        PSFField.load(path)
    assert "bad.npz" in str(info.value)


def test_negative_psf_is_named(tmp_path):
    psfs = _valid_psfs()
    psfs[0, 0, 0, 0, 0] = -0.01
    psfs[0, 0, 0, 2, 2] = 1.01
    with pytest.raises(ValueError, match="non-negative"):
        PSFField.load(_write(tmp_path / "neg.npz", psfs))


def test_tolerance_of_normalisation(tmp_path):
    psfs = _valid_psfs() * (1 + 5e-5)
    assert PSFField.load(_write(tmp_path / "ok.npz", psfs)).grid == (2, 2)


def test_missing_key(tmp_path):
    path = tmp_path / "nometa.npz"
    np.savez(path, psfs=_valid_psfs())
    with pytest.raises(ValueError, match=r"nometa.npz.*missing key.*meta"):
        PSFField.load(path)


def test_bad_meta_json(tmp_path):
    with pytest.raises(ValueError, match=r"badmeta.npz.*meta"):
        PSFField.load(_write(tmp_path / "badmeta.npz", _valid_psfs(), meta="{not json"))


def test_not_an_npz(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello")
    with pytest.raises(ValueError, match="text.npz"):
        PSFField.load(path)


def test_at_tile_centre_is_exact(field):
    for r in range(3):
        for c in range(4):
            assert np.array_equal(field.at(*field.tile_centre(r, c)), field.psfs[r, c])


def test_at_between_two_centres_is_the_mean(field):
    (y0, x0), (_, x1) = field.tile_centre(1, 1), field.tile_centre(1, 2)
    np.testing.assert_allclose(
        field.at(y0, (x0 + x1) / 2), (field.psfs[1, 1] + field.psfs[1, 2]) / 2, atol=1e-7
    )
    (ya, xa), (yb, _) = field.tile_centre(0, 3), field.tile_centre(1, 3)
    np.testing.assert_allclose(
        field.at((ya + yb) / 2, xa), (field.psfs[0, 3] + field.psfs[1, 3]) / 2, atol=1e-7
    )


def test_at_is_clamped_at_borders(field):
    assert np.array_equal(field.at(0, 0), field.psfs[0, 0])
    assert np.array_equal(field.at(1e6, 1e6), field.psfs[-1, -1])


def test_second_moment_radius_of_gaussian():
    psf = gaussian_psf(41, 2.0, 2.0, 0.0)
    # An isotropic Gaussian of sigma s has RMS radius sqrt(2) * s.
    assert second_moment_radius(psf) == pytest.approx(2.0 * np.sqrt(2), rel=1e-3)


def test_summary_mentions_grid_and_widths(field):
    text = summary(field)
    assert "3 x 4 tiles" in text and "psf size k    9" in text


def _with_map(field, shift):
    distortion = np.zeros((3, 5, 2), np.float32)
    distortion[...] = shift
    return PSFField(field.psfs, field.image_size, meta=field.meta, distortion=distortion)


def test_distortion_map_round_trip_and_old_files_load(tmp_path, field):
    moved = _with_map(field, (0.5, -1.0))
    loaded = PSFField.load(moved.save(tmp_path / "moved.npz"))
    np.testing.assert_array_equal(loaded.distortion, moved.distortion)
    # A file written without the map (the format before it) still loads, with no geometric part.
    plain = PSFField.load(field.save(tmp_path / "plain.npz"))
    assert plain.distortion is None
    with np.load(tmp_path / "plain.npz") as data:
        assert "distortion" not in data.files
    image = np.random.default_rng(0).random((60, 80, 3)).astype(np.float32)
    assert plain.distort(image) is image


def test_bad_distortion_map_is_rejected(field):
    with pytest.raises(ValueError, match="distortion"):
        PSFField(field.psfs, field.image_size, distortion=np.zeros((1, 5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        PSFField(field.psfs, field.image_size, distortion=np.full((2, 2, 2), np.nan))


def test_distort_moves_a_spot_by_the_map():
    psfs = np.zeros((1, 1, 1, 3, 3), np.float32)
    psfs[..., 1, 1] = 1.0
    image = np.zeros((64, 64), np.float32)
    yy, xx = np.mgrid[0:64, 0:64]
    image = np.exp(-((yy - 30.0) ** 2 + (xx - 32.0) ** 2) / (2 * 2.0**2)).astype(np.float32)
    distortion = np.zeros((4, 4, 2), np.float32)
    distortion[..., 0], distortion[..., 1] = 1.5, -0.75
    field = PSFField(psfs, (64, 64), channels=("Y",), distortion=distortion)
    out = field.distort(image)
    total = out.sum()
    centroid = ((out * yy).sum() / total, (out * xx).sum() / total)
    np.testing.assert_allclose(centroid, (31.5, 31.25), atol=0.005)
    np.testing.assert_allclose(field.displacement()[10, 20], (1.5, -0.75), atol=1e-5)
