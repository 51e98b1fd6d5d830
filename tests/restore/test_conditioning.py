"""What the non-blind network is told: pair noise and ISP, the PSFs across the patch, the linear domain."""

import numpy as np
import pytest
import torch

from degtrans.pairs import ISP_COLUMNS
from degtrans.restore.coords import fov_coords
from degtrans.restore.data import PairReader, patch_corner_psfs
from degtrans.restore.models.domain import to_display, to_linear
from degtrans.restore.models.wiener import DeepWiener, corner_weights, frequency_bands, wiener_deconv
from degtrans.simulate.isp import process, sample_isp_params
from degtrans.testing.synthetic import gaussian_psf


def test_batches_carry_noise_and_corner_psfs(toy_data, toy_field):
    batch = next(PairReader(toy_data, val_fraction=0.0, with_psf=True).batches("all", 4, shuffle=False))
    # The toy dataset stores its Gaussian noise as a read variance (no shot noise, no ISP draw).
    torch.testing.assert_close(batch["noise"], torch.tensor([[0.0, 0.005**2]] * 4))
    assert "isp" not in batch
    y0, x0 = int(batch["y0"][0]), int(batch["x0"][0])
    size = batch["degraded"].shape[-1]
    corners = batch["psf_corners"][0].numpy()
    assert corners.shape == (4, 3, 7, 7)
    np.testing.assert_allclose(corners[3], toy_field.at(y0 + size - 0.5, x0 + size - 0.5))
    np.testing.assert_allclose(corners, patch_corner_psfs(toy_field, y0, x0, size))


def test_to_linear_inverts_the_simulation_isp():
    params = sample_isp_params(torch.Generator().manual_seed(0), batch=2)
    isp = torch.cat(
        [torch.stack([params.rgb_gain, params.red_gain, params.blue_gain], 1), params.rgb2cam.flatten(1)], 1
    ).float()
    assert isp.shape[1] == len(ISP_COLUMNS)
    linear = 0.3 * torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # no clipped highlights
    image = process(linear.double(), params).float()
    torch.testing.assert_close(to_linear(image, isp), linear, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(to_display(to_linear(image, isp), isp), image, atol=2e-5, rtol=1e-4)


def test_corner_weights_and_frequency_bands_are_partitions_of_unity():
    weights = corner_weights(5, 7)
    torch.testing.assert_close(weights.sum(1), torch.ones(1, 5, 7))
    assert weights[0, 0, 0, 0] == 1 and weights[0, 3, -1, -1] == 1 and weights[0, 1, 0, -1] == 1
    bands = frequency_bands(12, 10, 4)
    torch.testing.assert_close(bands.sum(0), torch.ones(12, 6))
    assert bands[0, 0, 0] == 1 and (bands >= 0).all()


def test_wiener_with_equal_corner_psfs_is_the_single_psf_filter():
    features = torch.rand(2, 3, 12, 14)
    psf = torch.from_numpy(gaussian_psf(5, 1.2, 0.8, 0.5)).float().expand(2, 3, 5, 5)
    phi = torch.full((2, 3, 4), 1e-3)
    single = wiener_deconv(features, psf, phi)
    blended = wiener_deconv(features, psf[:, None].expand(2, 4, 3, 5, 5), phi, weights=corner_weights(12, 14))
    torch.testing.assert_close(blended, single, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="weights"):
        wiener_deconv(features, psf[:, None].expand(2, 4, 3, 5, 5), phi)


def test_wiener_psf_index_is_the_psf_repeated_per_feature():
    features = torch.rand(2, 5, 10, 12)
    psf = torch.rand(2, 4, 2, 5, 5)
    psf = psf / psf.sum((-2, -1), keepdim=True)
    index = torch.tensor([0, 1, 1, 0, 1])
    phi = torch.rand(2, 5, 3) * 1e-2
    weights = corner_weights(10, 12)
    shared = wiener_deconv(features, psf, phi, weights=weights, psf_index=index)
    torch.testing.assert_close(shared, wiener_deconv(features, psf[:, :, index], phi, weights=weights))


def test_deep_wiener_takes_one_psf_with_or_without_the_tile_axis():
    model = DeepWiener(features=6, width=4).eval()
    x = torch.rand(1, 3, 12, 12)
    coords = fov_coords(torch.tensor([0]), torch.tensor([0]), 32, 32, 12, 12)
    psf = torch.from_numpy(gaussian_psf(5, 1.0, 1.0, 0.0)).float().expand(1, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(model(x, coords, psf[:, None]), model(x, coords, psf))
        corners = psf[:, None].expand(1, 4, 3, 5, 5)
        torch.testing.assert_close(model(x, coords, corners), model(x, coords, psf), atol=1e-5, rtol=1e-5)


def _blurred_noisy(noise_std: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean and degraded (blurred in linear light, noisy) 32-px patches, and the PSF."""
    gen = torch.Generator().manual_seed(0)
    clean = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=gen), size=32, mode="bicubic")
    clean = clean.clamp(0.05, 0.95)
    psf = torch.from_numpy(gaussian_psf(7, 1.5, 1.5, 0.0)).float()
    linear = to_linear(clean)
    padded = torch.nn.functional.pad(linear, (3, 3, 3, 3), mode="reflect")
    blurred = torch.nn.functional.conv2d(padded, psf.expand(3, 1, 7, 7), groups=3)
    degraded = to_display(blurred + noise_std * torch.randn(blurred.shape, generator=gen))
    return clean, degraded, psf.expand(2, 3, 7, 7)


def test_untrained_deep_wiener_is_a_noise_tuned_filter_above_the_input():
    clean, degraded, psf = _blurred_noisy(0.003)
    coords = fov_coords(torch.tensor([0, 32]), torch.tensor([0, 0]), 64, 64, 32, 32)
    model = DeepWiener(features=6, width=4).eval()
    noise = torch.tensor([[0.0, 0.003**2]] * 2)
    with torch.no_grad():
        restored = model(degraded, coords, psf, noise=noise).clamp(0, 1)
        # Told a 100x higher noise level it regularises more: a smoother result.
        smoother = model(degraded, coords, psf, noise=100 * noise)
    assert (restored - clean).square().mean() < (degraded - clean).square().mean()

    def roughness(x: torch.Tensor) -> float:
        return float((x[..., 1:] - x[..., :-1]).square().mean())

    assert roughness(smoother) < roughness(restored)
