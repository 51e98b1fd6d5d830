"""Camera profiles: DNG files written here and read back through rawpy; TOML; bundled profiles."""

from fractions import Fraction

import numpy as np
import pytest
import tifffile

from degtrans.simulate.camera import CameraProfile, bundled_profiles, load_profile
from degtrans.simulate.isp import rgb_to_cam_matrix

# Canon EOS 5D Mark II ColorMatrix (dcraw adobe_coeff, XYZ D65 -> camera).
CANON_5D2 = [0.4716, 0.0603, -0.0830, -0.7798, 1.5474, 0.2480, -0.1496, 0.1937, 0.6651]
CFA_CODES = {"R": 0, "G": 1, "B": 2}


def _rationals(values):
    out = []
    for v in values:
        f = Fraction(v).limit_denominator(10000)
        out += [f.numerator, f.denominator]
    return out


def write_dng(
    path, pattern="RGGB", black=512, white=16383, neutral=(0.5, 1.0, 0.7), matrix=CANON_5D2, size=(32, 48)
):
    """A minimal Bayer DNG (uncompressed CFA, DNG 1.4 tags)."""
    rng = np.random.default_rng(0)
    mosaic = rng.integers(black, white, size).astype(np.uint16)
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "degtrans test camera", True),  # UniqueCameraModel
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, tuple(CFA_CODES[c] for c in pattern), True),  # CFAPattern
        (50714, "H", 1, (black,), True),  # BlackLevel
        (50717, "H", 1, (white,), True),  # WhiteLevel
        (50721, "2i", 9, _rationals(matrix), True),  # ColorMatrix1
        (50728, "2I", 3, _rationals(neutral), True),  # AsShotNeutral
        (50778, "H", 1, (21,), True),  # CalibrationIlluminant1 = D65
        (271, "s", 0, "Degtrans", True),  # Make
        (272, "s", 0, "Test Camera", True),  # Model
    ]
    tifffile.imwrite(path, mosaic, photometric=32803, extratags=tags, metadata=None, subfiletype=0)
    return path


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_from_raw_reads_every_field(tmp_path, pattern):
    neutral = (0.48, 1.0, 0.67)
    path = write_dng(tmp_path / "cam.dng", pattern=pattern, black=600, white=15600, neutral=neutral)
    profile = CameraProfile.from_raw(path)
    assert profile.name == "cam"
    assert profile.cfa_pattern == pattern
    assert profile.black_level == (600.0,) * 4
    assert profile.white_level == 15600.0
    assert np.allclose(profile.as_shot_neutral, neutral, atol=1e-4)
    # LibRaw keeps a DNG's ColorMatrix only up to the scale of each row: compare row directions.
    ratio = np.asarray(profile.xyz_to_cam) / np.reshape(CANON_5D2, (3, 3))
    assert np.allclose(ratio, ratio[:, :1], rtol=1e-4)
    assert np.allclose(profile.rgb2cam, rgb_to_cam_matrix(np.reshape(CANON_5D2, (3, 3))), atol=1e-6)
    assert np.allclose(profile.rgb2cam.sum(axis=1), 1.0)
    assert np.allclose(profile.wb_gains, [1 / 0.48, 1.0, 1 / 0.67], rtol=1e-4)


def test_corrupt_and_missing_raw_name_the_file(tmp_path):
    bad = tmp_path / "broken.dng"
    bad.write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(ValueError, match="broken.dng"):
        CameraProfile.from_raw(bad)
    with pytest.raises(ValueError, match="nothere.nef"):
        CameraProfile.from_raw(tmp_path / "nothere.nef")


def test_non_bayer_raw_is_unsupported(tmp_path):
    path = tmp_path / "linear.dng"
    tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50721, "2i", 9, _rationals(CANON_5D2), True)]
    tifffile.imwrite(path, np.zeros((16, 16, 3), np.uint16), photometric="rgb", extratags=tags, metadata=None)
    with pytest.raises(ValueError, match="linear.dng"):
        CameraProfile.from_raw(path)


def test_toml_round_trip(tmp_path):
    profile = CameraProfile.from_raw(write_dng(tmp_path / "cam.dng"))
    again = CameraProfile.from_toml(profile.save(tmp_path / "cam.toml"))
    assert again == profile
    assert load_profile(tmp_path / "cam.toml") == profile


def test_bundled_profiles_are_valid_and_distinct():
    names = bundled_profiles()
    assert len(names) >= 2
    profiles = [CameraProfile.bundled(n) for n in names]
    matrices = {tuple(np.round(p.rgb2cam, 6).ravel()) for p in profiles}
    assert len(matrices) == len(names)
    for p in profiles:
        # Camera sensitivities overlap: a colour matrix keeps the diagonal dominant after sRGB mapping.
        assert np.all(np.diag(p.rgb2cam) > 0.4)
        assert p.wb_gains[0] > 1 and p.wb_gains[2] > 1


def test_bad_toml_names_the_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\ncfa = "RGGB"\n')
    with pytest.raises(ValueError, match=r"bad.toml.*'cfa'"):
        CameraProfile.from_toml(path)
    path.write_text('name = "x"\ncfa_pattern = "RGBG"\n')
    with pytest.raises(ValueError, match=r"bad.toml.*cfa_pattern"):
        CameraProfile.from_toml(path)
    with pytest.raises(ValueError, match="unknown bundled camera profile|not a bundled name"):
        load_profile("no-such-camera")


@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
def test_neutral_raw_develops_to_grey(tmp_path, pattern):
    from degtrans.restore.infer import read_photo
    from degtrans.simulate.camera import develop_raw

    black, white, neutral = 512, 16383, (0.5, 1.0, 0.7)
    path = write_dng(tmp_path / "grey.dng", pattern=pattern, black=black, white=white, neutral=neutral)
    # Overwrite the mosaic with a flat grey scene as this camera sees it under the as-shot light.
    level = {c: black + 0.3 * neutral[i] * (white - black) for i, c in enumerate("RGB")}
    height, width = 32, 48
    layout = np.array([level[c] for c in pattern]).reshape(2, 2)
    mosaic = np.tile(layout, (height // 2, width // 2)).round().astype(np.uint16)
    data = bytearray(path.read_bytes())
    offset = tifffile.TiffFile(path).pages[0].dataoffsets[0]
    data[offset : offset + mosaic.nbytes] = mosaic.tobytes()
    path.write_bytes(bytes(data))

    developed = develop_raw(path)
    assert developed.shape == (height, width, 3)
    centre = developed[4:-4, 4:-4]
    assert np.ptp(centre) < 2e-3  # flat
    assert np.abs(centre - centre.mean(axis=-1, keepdims=True)).max() < 2e-3  # neutral: R = G = B
    assert 0.3 < centre.mean() < 0.9  # a mid grey after gamma and tone curve
    np.testing.assert_allclose(read_photo(path), developed, atol=1e-6)
