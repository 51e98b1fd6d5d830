"""Dead-leaves training images: reproducible, full tonal range, a natural image's 1/f² spectrum."""

import numpy as np
import pytest

from degtrans.io import read_image
from degtrans.simulate.deadleaves import dead_leaves, write_dead_leaves


def test_same_seed_same_image_and_values_span_the_range():
    a = dead_leaves(64, 96, np.random.default_rng(5))
    b = dead_leaves(64, 96, np.random.default_rng(5))
    c = dead_leaves(64, 96, np.random.default_rng(6))
    assert a.shape == (64, 96, 3) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0
    grey = a.mean(axis=2)
    assert np.quantile(grey, 0.02) < 0.15 and np.quantile(grey, 0.98) > 0.85  # darks and whites
    assert np.abs(a - grey[..., None]).max() > 0.1  # colour, not only grey


def test_spectrum_falls_like_a_natural_images():
    grey = np.mean([dead_leaves(128, 128, np.random.default_rng(i)).mean(axis=2) for i in range(3)], axis=0)
    power = np.abs(np.fft.rfft2(grey - grey.mean())) ** 2
    radius = np.hypot(np.fft.fftfreq(128)[:, None], np.fft.rfftfreq(128)[None, :])
    octaves = [(0.03, 0.06), (0.06, 0.12), (0.12, 0.24)]
    means = [power[(radius >= lo) & (radius < hi)].mean() for lo, hi in octaves]
    slopes = np.diff(np.log2(means))  # log2 power per octave: -2 for a 1/f² spectrum
    assert np.all((slopes > -3.0) & (slopes < -1.0)), slopes


def test_written_set_is_extended_not_changed_by_a_larger_count(tmp_path):
    small = write_dead_leaves(tmp_path / "a", 2, (32, 48), seed=1)
    large = write_dead_leaves(tmp_path / "b", 3, (32, 48), seed=1)
    assert [p.name for p in large[:2]] == [p.name for p in small]
    assert np.array_equal(read_image(small[1]), read_image(large[1]))
    assert read_image(large[2]).shape == (32, 48, 3)


def _flat_fraction(image: np.ndarray) -> float:
    """Fraction of pixels equal to their right and lower neighbours (inside a flat disc)."""
    same_x = np.all(image[:-1, :-1] == image[:-1, 1:], axis=-1)
    same_y = np.all(image[:-1, :-1] == image[1:, :-1], axis=-1)
    return float((same_x & same_y).mean())


def test_textured_discs_add_texture_and_keep_the_range_and_reproducibility():
    flat = dead_leaves(96, 128, np.random.default_rng(3))
    assert np.array_equal(flat, dead_leaves(96, 128, np.random.default_rng(3), texture=0.0))
    textured = dead_leaves(96, 128, np.random.default_rng(3), texture=1.0)
    assert np.array_equal(textured, dead_leaves(96, 128, np.random.default_rng(3), texture=1.0))
    assert textured.min() >= 0.0 and textured.max() <= 1.0
    # Flat discs leave most pixels equal to their neighbours; textured ones almost none.
    assert _flat_fraction(flat) > 0.3 and _flat_fraction(textured) < 0.5 * _flat_fraction(flat)
    with pytest.raises(ValueError, match="texture"):
        dead_leaves(10, 10, np.random.default_rng(0), texture=1.5)


def test_bad_sizes_are_errors():
    with pytest.raises(ValueError, match="positive"):
        dead_leaves(0, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="max_radius"):
        dead_leaves(10, 10, np.random.default_rng(0), max_radius=0.5)
