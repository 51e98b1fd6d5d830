"""Bayer mosaic and demosaicking."""

import pytest
import torch

from degtrans.simulate.cfa import PATTERNS, cfa_masks, demosaic, mosaic_masked, phase_pattern

METHODS = ("bilinear", "malvar")


def mosaic(rgb: torch.Tensor, pattern: str = "RGGB", offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
    return mosaic_masked(rgb, cfa_masks(pattern, rgb.shape[-2], rgb.shape[-1], offset))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_masks_partition_pixels_with_two_greens(pattern):
    masks = cfa_masks(pattern, 6, 8)
    assert torch.equal(masks.sum(0), torch.ones(6, 8))
    assert masks[1].sum() == 24 and masks[0].sum() == 12 and masks[2].sum() == 12
    assert masks[{"R": 0, "G": 1, "B": 2}[pattern[0]], 0, 0] == 1


def test_phase_follows_sensor_position():
    assert phase_pattern("RGGB", (0, 1)) == "GRBG"
    assert phase_pattern("RGGB", (1, 0)) == "GBRG"
    assert phase_pattern("RGGB", (1, 1)) == "BGGR"
    frame = torch.rand(1, 3, 10, 12)
    crop = mosaic(frame[..., 3:9, 5:11], "RGGB", offset=(3, 5))
    assert torch.equal(crop, mosaic(frame, "RGGB")[..., 3:9, 5:11])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("offset", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_demosaic_exact_on_constant_images(method, pattern, offset):
    colour = torch.tensor([0.3, 0.6, 0.2], dtype=torch.float64)[None, :, None, None]
    image = colour.expand(2, 3, 9, 11).clone()
    out = demosaic(mosaic(image, pattern, offset), pattern, offset, method)
    assert torch.allclose(out, image, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_demosaic_close_on_smooth_images(method):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    image = torch.stack([0.2 + 0.5 * xx, 0.3 + 0.3 * yy, 0.5 + 0.2 * torch.sin(3 * xx + 2 * yy)])[
        None
    ].double()
    out = demosaic(mosaic(image, "RGGB"), "RGGB", method=method)
    inner = (out - image)[..., 2:-2, 2:-2].abs().max()
    assert inner < 5e-3


def test_malvar_beats_bilinear_on_detail():
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 68, 68, generator=g, dtype=torch.float64), 5, 1)
    image = torch.cat([0.9 * base, base, 0.8 * base + 0.1], dim=1)
    err = {m: (demosaic(mosaic(image), method=m) - image)[..., 4:-4, 4:-4].pow(2).mean() for m in METHODS}
    assert err["malvar"] < err["bilinear"]


def test_mosaic_keeps_recorded_samples():
    image = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    raw = mosaic(image, "BGGR")
    out = demosaic(raw, "BGGR", method="malvar")
    masks = cfa_masks("BGGR", 6, 6).double()
    assert torch.allclose((out * masks).sum(1, keepdim=True), raw)


def test_bad_pattern_and_method():
    with pytest.raises(ValueError, match="CFA pattern"):
        mosaic(torch.rand(1, 3, 4, 4), "RGBG")
    with pytest.raises(ValueError, match="demosaic method"):
        demosaic(torch.rand(1, 1, 4, 4), method="ahd")
