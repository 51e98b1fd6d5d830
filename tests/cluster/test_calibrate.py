"""Calibration on Ray: the actor pool survives a killed actor and returns the same tiles as local fitting."""

import numpy as np
import pytest
import torch

from degtrans.calibrate.fit import FitProblem, fit_tile
from degtrans.config import ActorsConfig, CalibrateConfig
from degtrans.kernels import sv_conv2d
from degtrans.testing.synthetic import gaussian_field

pytestmark = pytest.mark.ray

SIZE, GRID, K = 48, (2, 2), 5
CONFIG = CalibrateConfig(rows=2, cols=2, psf_size=K, ray=ActorsConfig(actors=2))


@pytest.fixture(scope="module")
def problem() -> FitProblem:
    truth = gaussian_field(GRID, K, (SIZE, SIZE), sigma_centre=0.8, sigma_corner=1.2)
    rng = np.random.default_rng(0)
    targets = rng.random((2, 3, SIZE, SIZE), dtype=np.float32)
    with torch.no_grad():
        photos = sv_conv2d(torch.from_numpy(targets), torch.from_numpy(truth.psfs)).numpy()
    masks = np.zeros((2, SIZE, SIZE), bool)
    masks[:, K // 2 : -(K // 2), K // 2 : -(K // 2)] = True
    return FitProblem(targets, photos, masks, ("a", "b"), GRID, K)


def test_killed_actor_tiles_are_retried(ray_session, problem):
    from degtrans.cluster.calibrate import ray_mapper, start_fitters

    ray = ray_session
    actors = start_fitters(problem, CONFIG)
    pids_before = ray.get([a.pid.remote() for a in actors])
    killed = []

    def kill_first_actor_once(tile, pool):
        if not killed:
            killed.append(tile)
            ray.kill(pool[0], no_restart=False)

    tiles = [(r, c) for r in range(2) for c in range(2)]
    mapper = ray_mapper(actors, CONFIG, progress=False, on_result=kill_first_actor_once)
    results = mapper(tiles)
    assert killed and set(results) == set(tiles)
    for (r, c), fit in results.items():
        assert not isinstance(fit, str), fit
        # Idempotent: the actor's (possibly retried) fit equals the same fit done here.
        np.testing.assert_allclose(fit.psf, fit_tile(problem, r, c, CONFIG).psf, atol=1e-6)
    pids_after = ray.get([a.pid.remote() for a in actors])
    assert pids_after[0] != pids_before[0] and pids_after[1] == pids_before[1]
    for actor in actors:
        ray.kill(actor)


def test_uncoverable_tile_is_reported_not_fatal(ray_session, problem):
    import dataclasses

    from degtrans.calibrate.pipeline import solve_field
    from degtrans.cluster.calibrate import ray_mapper, start_fitters

    masks = problem.masks.copy()
    masks[:, : 3 * SIZE // 4 + 1, : 3 * SIZE // 4 + 1] = False
    hidden = dataclasses.replace(problem, masks=masks)
    config = dataclasses.replace(CONFIG, ray=dataclasses.replace(CONFIG.ray, actors=1))
    actors = start_fitters(hidden, config)
    solution = solve_field(hidden, config, ray_mapper(actors, config, progress=False))
    assert set(solution.failed) == {(0, 0)}
    np.testing.assert_allclose(solution.psfs.sum(axis=(-1, -2)), 1.0, atol=1e-5)
    for actor in actors:
        ray_session.kill(actor)


def test_joint_solve_on_actor_blocks_is_the_one_process_solve(ray_session, problem):
    """Two actors each hold half the frame with its halo; the driver's CG sees only PSFs."""
    import dataclasses

    from degtrans.calibrate.pipeline import local_mapper, solve_field
    from degtrans.cluster.calibrate import ray_mapper, ray_shards, start_fitters

    noisy = dataclasses.replace(
        problem, photos=problem.photos + np.random.default_rng(1).normal(0, 0.002, problem.photos.shape)
    )
    config = CONFIG
    actors = start_fitters(noisy, config)
    try:
        shards = ray_shards(actors)
        assert len(shards("residual", (torch.zeros(4, 3, K, K),))) == 2
        distributed = solve_field(noisy, config, ray_mapper(actors, config, progress=False), shards)
    finally:
        for actor in actors:
            ray_session.kill(actor)
    local = solve_field(noisy, config, local_mapper(noisy, config, progress=False))
    relative = np.linalg.norm(distributed.psfs - local.psfs) / np.linalg.norm(local.psfs)
    assert relative < 0.002, relative
