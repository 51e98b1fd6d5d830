"""Calibration metrics: the band the targets cover, the floor it implies, the in-band error."""

import numpy as np

from degtrans.calibrate.accuracy import band_floor, format_metrics, in_band_error, psf_error, target_band
from degtrans.calibrate.fit import FitProblem
from degtrans.testing.synthetic import gaussian_field


def _band_limited(cut: float, shape: str, size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(0)
    spectrum = np.fft.rfft2(rng.normal(size=(3, size, size)))
    fy, fx = np.abs(np.fft.fftfreq(size))[:, None], np.fft.rfftfreq(size)[None, :]
    ring = np.hypot(fy, fx) if shape == "disc" else np.maximum(fy, fx)
    return np.fft.irfft2(spectrum * (ring <= cut), s=(size, size)).astype(np.float32)


def _band(targets: np.ndarray) -> float:
    return target_band(FitProblem(targets, targets, np.ones((1, 128, 128), bool), ("a",), (1, 1), 3))


def test_target_band_finds_the_covered_square():
    for cut in (0.25, 0.4, 0.5):
        assert abs(_band(_band_limited(cut, "square")[None]) - cut) < 0.02
        # A disc leaves the corners of its square empty: only the inscribed square counts as covered.
        assert abs(_band(_band_limited(cut, "disc")[None]) - cut / np.sqrt(2)) < 0.03


def test_floor_and_in_band_error():
    truth = gaussian_field((2, 2), 15, (64, 64), sigma_centre=1.2, sigma_corner=1.6)
    assert np.all(band_floor(truth, 0.75) < 1e-9)
    # The square up to Nyquist in each axis is the whole spectrum of a PSF on the pixel grid.
    assert np.all(band_floor(truth, 0.5) < 1e-9)
    assert np.all(band_floor(truth, 0.1) > band_floor(truth, 0.2))
    # With a band that holds every frequency the in-band error is the pixel error; narrower bands see less.
    other = gaussian_field((2, 2), 15, (64, 64), sigma_centre=1.0, sigma_corner=1.9)
    np.testing.assert_allclose(in_band_error(other, truth, 0.75), psf_error(other, truth), rtol=1e-6)
    assert np.all(in_band_error(other, truth, 0.1) < in_band_error(other, truth, 0.3))
    band = 0.3
    text = format_metrics(
        {
            "target_band_cycles_per_px": band,
            "out_of_band_share_median": 0.1,
            "out_of_band_share_max": 0.2,
            "reblur_psnr_heldout_db": [41.0],
            "heldout_pairs": ["x"],
        }
    )
    assert "0.30 cycles/px" in text and "held-out" in text
