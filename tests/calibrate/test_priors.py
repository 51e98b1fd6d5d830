"""Stage II loss terms: each is zero exactly where its prior holds, positive elsewhere."""

import numpy as np
import pytest
import torch

from degtrans.calibrate import losses
from degtrans.testing.synthetic import gaussian_psf


def _psfs(k: int = 11) -> torch.Tensor:
    return torch.from_numpy(np.stack([gaussian_psf(k, 1.5, 0.9, 0.4, shift=(0.7, -0.3)) for _ in range(3)]))


def test_sum2one_zero_for_normalised_and_measures_gain():
    h = _psfs()
    assert float(losses.sum2one(h)) == pytest.approx(0.0, abs=1e-9)
    assert float(losses.sum2one(1.1 * h)) == pytest.approx(3 * 0.1, rel=1e-6)


def test_symmetry_zero_for_centro_symmetric_only():
    centred = torch.from_numpy(gaussian_psf(11, 2.0, 1.0, 0.7))[None]
    assert float(losses.symmetry(centred)) == pytest.approx(0.0, abs=1e-12)
    shifted = torch.from_numpy(gaussian_psf(11, 2.0, 1.0, 0.7, shift=(1.0, 0.5)))[None]
    assert float(losses.symmetry(shifted)) > 1e-4


def test_boundary_zero_inside_support_positive_outside():
    k, radius = 11, 3.0
    mask = losses.support_mask(k, radius)
    inside = torch.from_numpy(gaussian_psf(k, 1.0, 1.0, 0.0)) * (1 - mask)
    assert float(losses.boundary(inside[None], mask)) == 0.0
    wide = torch.from_numpy(gaussian_psf(k, 3.0, 3.0, 0.0))[None]
    outside_energy = float((wide * mask).sum())
    assert float(losses.boundary(wide, mask)) == pytest.approx(outside_energy)
    assert outside_energy > 0.1


def test_support_mask_default_is_inscribed_disc():
    mask = losses.support_mask(9, 0.0)
    assert mask[4, 4] == 0 and mask[4, 0] == 0 and mask[0, 0] == 1
    with pytest.raises(ValueError, match="odd"):
        losses.support_mask(8, 2.0)


def test_losses_are_differentiable(tolerance):
    h = _psfs(7).double().requires_grad_(True)
    mask = losses.support_mask(7, 2.0, torch.float64)
    assert torch.autograd.gradcheck(lambda x: losses.symmetry(x) + losses.sum2one(x + 0.01), (h,))
    assert torch.autograd.gradcheck(lambda x: losses.boundary(x + 0.01, mask), (h,))
