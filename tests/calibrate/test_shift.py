"""Sub-pixel PSF shifts (``pipeline._shift_psfs``), the aligned error and the re-centred estimate."""

import numpy as np
import pytest

from degtrans.calibrate.accuracy import centred_field, mean_centroid, psf_error, shift_psfs
from degtrans.field import PSFField
from degtrans.simulate.optics import lens_field


@pytest.fixture(scope="module")
def lens():
    return lens_field((2, 2), 31, (128, 160), "triplet")


@pytest.mark.parametrize("shift", [0.4, -0.4, 1.3, -1.3])
def test_shift_moves_the_centroid_by_the_shift_either_way(lens, shift):
    psfs = lens.psfs.astype(np.float64)
    offsets = np.array([[[shift, -0.5 * shift], [0.2, shift]], [[-shift, 0.0], [shift, shift]]])
    moved = shift_psfs(psfs, offsets)
    # What the 31-px window cuts off the tails moves the centroid by a few hundredths.
    np.testing.assert_allclose(mean_centroid(moved) - mean_centroid(psfs), offsets, atol=0.05)
    np.testing.assert_allclose(moved.sum(axis=(-1, -2)), psfs.sum(axis=(-1, -2)), rtol=1e-9)
    back = shift_psfs(moved, -offsets)
    assert np.abs(back - psfs).max() < 0.01 * psfs.max()


def test_aligned_error_ignores_a_common_shift_but_not_lateral_colour(lens):
    shifted = PSFField(shift_psfs(lens.psfs.astype(np.float64), np.full((2, 2, 2), 0.7)), lens.image_size)
    assert psf_error(shifted, lens).min() > 0.2
    assert psf_error(shifted, lens, align=True).max() < 0.02
    # Swapping R and B reverses the lateral colour: the aligned error still sees it.
    swapped = PSFField(lens.psfs[:, :, ::-1], lens.image_size)
    assert psf_error(swapped, lens, align=True).min() > 0.1


def test_centred_field_centres_green_and_keeps_the_offsets_of_red_and_blue(lens):
    psfs = lens.psfs.astype(np.float64)
    moved = shift_psfs(psfs, np.array([[[0.6, -0.3], [-0.8, 0.1]], [[0.0, 0.9], [0.4, 0.4]]]))
    centred = centred_field(moved, lens.image_size).psfs.astype(np.float64)
    green = mean_centroid(centred[:, :, 1:2])
    assert np.abs(green).max() < 0.02
    for ch in (0, 2):
        offset = mean_centroid(centred[:, :, ch : ch + 1]) - green
        truth = mean_centroid(psfs[:, :, ch : ch + 1]) - mean_centroid(psfs[:, :, 1:2])
        np.testing.assert_allclose(offset, truth, atol=0.03)
