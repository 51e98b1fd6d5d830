"""The joint solve's products, block by block: each shard's forward is the SV convolution on its block,
its adjoint is the adjoint, and the blocks' parts add up to the whole frame's."""

import numpy as np
import pytest
import torch

from degtrans.calibrate.fit import FitProblem, tile_weight_map
from degtrans.calibrate.joint import gather_stats, local_shards
from degtrans.calibrate.shards import Shard, plan_blocks, shard_data
from degtrans.kernels import sv_conv2d
from degtrans.testing.synthetic import gaussian_field

FRAME, GRID, K = (48, 60), (2, 3), 7


@pytest.fixture(scope="module")
def pairs():
    field = gaussian_field(GRID, K, FRAME, sigma_centre=0.9, sigma_corner=1.6)
    rng = np.random.default_rng(0)
    targets = rng.random((2, 3, *FRAME), dtype=np.float32)
    with torch.no_grad():
        photos = sv_conv2d(torch.from_numpy(targets), torch.from_numpy(field.psfs), padding="zeros").numpy()
    masks = rng.random((2, *FRAME)) > 0.1
    return field, targets, photos, masks


def _shard(pairs, block):
    _, targets, photos, masks = pairs
    return Shard(shard_data(FitProblem(targets, photos, masks, ("a", "b"), GRID, K), block))


def test_plan_blocks_tiles_the_frame():
    for count in (1, 2, 3, 4, 6):
        blocks = plan_blocks(FRAME, count)
        covered = np.zeros(FRAME, int)
        for b in blocks:
            covered[b.rows[0] : b.rows[1], b.cols[0] : b.cols[1]] += 1
        assert len(blocks) == count and (covered == 1).all()
    # Near-square blocks: a wide frame is cut across its width first.
    assert plan_blocks((100, 300), 2)[0].cols == (0, 150)
    with pytest.raises(ValueError, match="count"):
        plan_blocks(FRAME, 0)


def test_forward_is_the_sv_convolution_and_adjoint_its_transpose(pairs):
    field, _, photos, _ = pairs
    (block,) = plan_blocks(FRAME, 1)
    shard = _shard(pairs, block)
    h = torch.from_numpy(field.psfs).reshape(6, 3, K, K)
    torch.testing.assert_close(shard.forward(h), torch.from_numpy(photos), atol=1e-5, rtol=1e-4)
    y = torch.randn(2, 3, *FRAME, generator=torch.Generator().manual_seed(0))
    g = torch.randn(6, 3, K, K, generator=torch.Generator().manual_seed(1))
    lhs, rhs = float((shard.forward(g) * y).sum()), float((g * shard.adjoint(y)).sum())
    assert abs(lhs - rhs) < 1e-4 * abs(lhs)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_blocks_add_up_to_the_whole_frame(pairs, count):
    field, targets, photos, masks = pairs
    (whole,) = plan_blocks(FRAME, 1)
    one = _shard(pairs, whole)
    parts = [_shard(pairs, block) for block in plan_blocks(FRAME, count)]
    h = torch.rand(6, 3, K, K, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(sum(p.normal(h) for p in parts), one.normal(h), rtol=1e-4, atol=1e-5)
    # Each block predicts its own pixels exactly (its halo holds the sources its outputs need).
    for part, block in zip(parts, plan_blocks(FRAME, count), strict=True):
        (y0, y1), (x0, x1) = block.rows, block.cols
        torch.testing.assert_close(part.forward(h), one.forward(h)[..., y0:y1, x0:x1], rtol=1e-4, atol=1e-5)
    stats, total = one.stats(), gather_stats([p.stats() for p in parts])
    for name in ("scale", "coverage", "rhs", "autocorrelation"):
        torch.testing.assert_close(getattr(total, name), getattr(stats, name), rtol=1e-4, atol=1e-4)
    squared, weight = (sum(t) for t in zip(*[p.residual(h) for p in parts], strict=True))
    torch.testing.assert_close(squared, one.residual(h)[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(weight, one.residual(h)[1], rtol=1e-4, atol=1e-6)


def test_scale_is_the_tiles_masked_source_energy(pairs):
    _, targets, photos, masks = pairs
    run = local_shards(FitProblem(targets, photos, masks, ("a", "b"), GRID, K))
    stats = gather_stats(run("stats", ()))
    w = tile_weight_map(GRID, FRAME, 1, 2)
    expected = (masks[:, None] * (w * targets) ** 2).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(stats.scale[5].numpy(), expected, rtol=1e-4)
