import pytest
import torch

from degtrans.metrics import psnr
from degtrans.restore.losses import restoration_loss


def test_psnr_loss_is_minus_the_mean_per_sample_psnr_over_ten():
    target = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    pred = target + torch.tensor([0.1, 0.01, 0.001]).view(3, 1, 1, 1)  # 20, 40 and 60 dB
    loss = restoration_loss(pred, target, kind="psnr")
    assert float(loss) == pytest.approx(-float(psnr(pred, target).mean()) / 10.0, rel=1e-4)
    assert float(loss) == pytest.approx(-4.0, rel=1e-4)


def test_psnr_loss_weighs_samples_by_their_relative_error_unlike_l1():
    target = torch.zeros(2, 1, 4, 4)
    pred = (target + torch.tensor([0.1, 0.001]).view(2, 1, 1, 1)).requires_grad_()
    restoration_loss(pred, target, kind="psnr").backward()
    psnr_ratio = float(pred.grad[1].abs().sum() / pred.grad[0].abs().sum())
    pred.grad = None
    restoration_loss(pred, target, kind="l1").backward()
    l1_ratio = float(pred.grad[1].abs().sum() / pred.grad[0].abs().sum())
    # d log(e^2) / de = 2 / e: the 100x smaller error gets a 100x larger gradient; L1 treats both alike.
    assert psnr_ratio == pytest.approx(100.0, rel=1e-3) and l1_ratio == pytest.approx(1.0)


def test_unknown_loss_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="kind"):
        restoration_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), kind="huber")
