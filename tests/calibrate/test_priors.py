"""Stage II's prior: the support mask and the centroid term."""

import pytest
import torch

from degtrans.calibrate.priors import Regulariser, support_mask


def test_support_mask_default_is_inscribed_disc():
    mask = support_mask(9, 0.0)
    assert mask[4, 4] == 0 and mask[4, 0] == 0 and mask[0, 0] == 1
    with pytest.raises(ValueError, match="odd"):
        support_mask(8, 2.0)


def test_centroid_prior_centres_green_only():
    h = torch.zeros(3, 5, 5)
    h[:, 2, 3] = 1.0  # every channel one pixel right of centre
    prior = Regulariser(ridge=0.0, smooth=0.0, centroid=1.0, centroid_channels=(1,))
    push = prior.apply(h, torch.ones(3))
    assert push[0].abs().sum() == 0 and push[2].abs().sum() == 0
    # The gradient of (sum h x)^2 / 2 at a centroid of +1: pixels right of centre pay, left gain.
    assert push[1, 2, 4] > 0 and push[1, 2, 0] < 0
