"""Image files (degtrans.io): one decoder, 8/16-bit round trips, RAW detection, errors naming the file."""

import cv2
import numpy as np
import pytest

from degtrans.io import (
    RAW_SUFFIXES,
    decode_image,
    encode_image,
    image_size,
    is_raw,
    read_image,
    write_image,
)


def _rgb(shape=(6, 5, 3), seed=3):
    return np.random.default_rng(seed).random(shape)


@pytest.mark.parametrize("kind", ["u8", "u16", "grey", "rgba"])
def test_decode_image_formats(kind):
    rgb = _rgb()
    if kind == "u16":
        data, tol = np.rint(rgb * 65535).astype(np.uint16), 1 / 65535
    else:
        data, tol = np.rint(rgb * 255).astype(np.uint8), 1 / 255
    if kind == "grey":
        data, rgb = data[..., 0], np.repeat(rgb[..., :1], 3, axis=2)
        encoded = cv2.imencode(".png", data)[1].tobytes()
    else:
        bgr = data[..., ::-1]
        if kind == "rgba":
            bgr = np.concatenate([bgr, np.full_like(bgr[..., :1], data.max())], axis=2)
        encoded = cv2.imencode(".png", np.ascontiguousarray(bgr))[1].tobytes()
    image = decode_image(encoded, "x.png")
    assert image.shape == (6, 5, 3) and image.dtype == np.float32
    assert np.abs(image - rgb).max() <= tol
    with pytest.raises(ValueError, match="x.png: cannot decode"):
        decode_image(b"nope", "x.png")


@pytest.mark.parametrize(
    ("name", "bits"), [("a.png", 16), ("a.tif", 16), ("a.TIFF", 16), ("a.jpg", 8), ("a.webp", 8)]
)
def test_write_then_read_round_trips_at_the_suffix_bit_depth(tmp_path, name, bits):
    yy, xx = np.mgrid[0:16, 0:24] / 24.0
    image = np.stack([yy, xx, 0.3 + 0.2 * yy], axis=-1) + 0.01 * _rgb((16, 24, 3))  # smooth, not constant
    path = write_image(tmp_path / "sub" / name, image)
    assert path == tmp_path / "sub" / name and [p.name for p in path.parent.iterdir()] == [name]
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == (np.uint16 if bits == 16 else np.uint8)
    back = read_image(path)
    assert back.shape == image.shape and back.dtype == np.float32
    if bits == 16:  # lossless: exactly the rounding of the 16-bit quantisation
        assert np.abs(back - image).max() <= 0.5 / 65535 + 1e-7
        np.testing.assert_array_equal(stored[..., ::-1], np.round(image * 65535))  # RGB order on disk
    elif path.suffix == ".webp":  # lossless: exactly the rounding of the 8-bit quantisation
        np.testing.assert_array_equal(stored[..., ::-1], np.round(image * 255))
    else:  # JPEG is lossy: only close
        assert np.abs(back - image).mean() < 0.02


def test_write_image_clips_and_takes_grey(tmp_path):
    path = write_image(tmp_path / "g.png", np.array([[-0.5, 0.25], [1.5, 1.0]]))
    np.testing.assert_allclose(read_image(path)[..., 0], [[0.0, 0.25], [1.0, 1.0]], atol=1 / 65535)
    assert image_size(path) == (2, 2) == image_size(path.read_bytes())


def test_write_image_rejects_unknown_suffix_and_shape(tmp_path):
    with pytest.raises(ValueError, match=r"out.bmp.*'\.bmp'"):
        write_image(tmp_path / "out.bmp", np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match=r"out.png.*\(4, 4, 2\)"):
        write_image(tmp_path / "out.png", np.zeros((4, 4, 2)))
    assert not list(tmp_path.iterdir())
    assert encode_image(np.zeros((4, 4, 1)), ".PNG")[:4] == b"\x89PNG"


def test_raw_suffixes_are_detected_case_insensitively():
    assert {".dng", ".nef", ".cr2", ".cr3", ".arw"} <= set(RAW_SUFFIXES)
    assert is_raw("a/b/photo.DNG") and is_raw("x.nef")
    assert not any(is_raw(f"x{s}") for s in (".png", ".tif", ".jpg", ""))


def test_raw_files_go_to_the_chosen_raw_reader(tmp_path):
    raw = tmp_path / "shot.NEF"
    raw.write_bytes(b"not decoded by the image decoder")
    seen = []

    def reader(path):
        seen.append(path)
        return np.zeros((2, 3, 3), np.float32)

    assert read_image(raw, raw_reader=reader).shape == (2, 3, 3) and seen == [raw]


def test_corrupt_or_missing_files_name_the_file(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="junk.png"):
        read_image(junk)
    broken = tmp_path / "broken.dng"
    broken.write_bytes(b"not a raw file")
    with pytest.raises(ValueError, match="broken.dng"):
        read_image(broken)  # the default RAW reader: rawpy, linear
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        read_image(tmp_path / "missing.tif")
