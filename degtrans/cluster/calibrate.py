"""Calibration on Ray: one task per pair for registration, then a pool of stage II actors.

Each ``TileFitter`` actor loads the registered pairs once (the ``FitProblem`` travels through the
object store), fits tiles on request (the per-tile start), and holds one block of the frame with its
halo (``degtrans.calibrate.shards``) whose products the joint solve asks for: the driver runs the
conjugate gradients of ``degtrans.calibrate.joint`` and only tile PSFs cross the wire. Fitting and
products are idempotent, so an actor that dies is restarted by Ray (``max_restarts``, re-running its
constructor with the same data) and its queued and running calls re-executed (``max_task_retries``); a
tile whose call still fails is resubmitted once more to another actor, and after two failures it is
reported and filled from its neighbours by ``solve_field``. At most ``actors`` registration tasks run
at once, so ``actors`` is the calibration's parallelism throughout. Image paths must be readable by
every node (a shared file system on a cluster; locally they are).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from tqdm import tqdm

from degtrans.calibrate.fit import FitProblem, TileFit, TileFitError, fit_tile, stage_device
from degtrans.calibrate.joint import MapShards, problem_shards
from degtrans.calibrate.photos import find_pairs
from degtrans.calibrate.pipeline import (
    FieldSolution,
    Pairs,
    Tile,
    TileMapper,
    calibrate_in_rounds,
    solve_field,
)
from degtrans.calibrate.prepare import prepare_pair
from degtrans.calibrate.shards import Shard
from degtrans.cluster.session import ensure_ray
from degtrans.config import CalibrateConfig
from degtrans.errors import InputError
from degtrans.field import PSFField

log = logging.getLogger(__name__)

MAX_TILE_ATTEMPTS = 2


_prepare_pair_task = ray.remote(num_cpus=1)(prepare_pair)


@ray.remote(max_restarts=2, max_task_retries=2)
class TileFitter:
    """Holds the registered pairs and one shard; ``fit`` returns a ``TileFit`` or the reason the tile
    cannot be fitted, ``shard`` calls a method of the shard (``degtrans.calibrate.shards.Shard``)."""

    def __init__(self, problem: FitProblem, shard=None, device: str = "cpu") -> None:
        torch.set_num_threads(1)
        self.problem = problem
        self.device = device if device == "cpu" or torch.cuda.is_available() else "cpu"
        self._shard = None if shard is None else Shard(shard, self.device)

    def shard(self, method: str, *args):
        result = getattr(self._shard, method)(*args)
        # Back on the CPU: the driver adds the parts.
        if isinstance(result, torch.Tensor):
            return result.cpu()
        if isinstance(result, tuple):
            return tuple(r.cpu() for r in result)
        return type(result)(*(getattr(result, f).cpu() for f in result.__dataclass_fields__))

    def fit(self, row: int, col: int, config: CalibrateConfig) -> TileFit | str:
        try:
            return fit_tile(self.problem, row, col, config)
        except TileFitError as error:
            return str(error)

    def pid(self) -> int:
        return os.getpid()


class FitterPool(list):
    """The tile actors, plus the object refs of the problem and the shards they were built from: a
    restarted actor re-runs its constructor with those refs, so they must stay alive as long as the
    pool."""

    problem_ref = None
    shard_refs: list = []


def start_fitters(problem: FitProblem, config: CalibrateConfig) -> FitterPool:
    """``config.ray.actors`` actors, each with one CPU (or ``gpus_per_actor`` of a GPU), holding ``problem``
    and one block of it (``joint.problem_shards``: the frame cut into ``actors`` blocks)."""
    if config.ray.actors < 1:
        raise InputError(f"calibrate.ray.actors (--actors) must be >= 1, got {config.ray.actors}")
    pool = FitterPool()
    pool.problem_ref = ray.put(problem)
    pool.shard_refs = [ray.put(data) for data in problem_shards(problem, config.ray.actors)]
    device = str(stage_device(config))
    options = {"num_cpus": 1, "num_gpus": config.ray.gpus_per_actor}
    pool.extend(
        TileFitter.options(**options).remote(pool.problem_ref, ref, device) for ref in pool.shard_refs
    )
    return pool


def ray_shards(actors: list) -> MapShards:
    """The joint solve's shards on the actors (``start_fitters``): each argument goes to the object
    store once, every actor computes its block's part, the parts come back in actor order."""

    def run(method: str, args: tuple) -> list:
        refs = [ray.put(arg) for arg in args]
        return ray.get([actor.shard.remote(method, *refs) for actor in actors])

    return run


def ray_mapper(
    actors: list,
    config: CalibrateConfig,
    progress: bool = True,
    on_result: Callable[[Tile, list], None] | None = None,
) -> TileMapper:
    """A ``TileMapper`` over an actor pool: tiles are dealt round-robin and collected as they finish.

    ``on_result(tile, actors)`` is called after every finished tile (progress hooks, fault injection).
    """

    def run(tiles: list[Tile]) -> dict[Tile, TileFit | str]:
        pending: dict = {}
        attempts = dict.fromkeys(tiles, 0)

        def submit(tile: Tile, index: int) -> None:
            actor = actors[index % len(actors)]
            pending[actor.fit.remote(tile[0], tile[1], config)] = (tile, index)

        for index, tile in enumerate(tiles):
            submit(tile, index)
        results: dict[Tile, TileFit | str] = {}
        with tqdm(total=len(tiles), desc="tiles (init)", unit="tile", disable=not progress) as bar:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                tile, index = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except (RayActorError, RayTaskError) as error:
                    attempts[tile] += 1
                    if attempts[tile] < MAX_TILE_ATTEMPTS:
                        log.warning(
                            "tile %s failed (%s), retrying on another actor", tile, type(error).__name__
                        )
                        submit(tile, index + 1)
                        continue
                    value = f"tile {tile} failed {attempts[tile]} times: {type(error).__name__}: {error}"
                    log.error(value)
                results[tile] = value
                bar.update(1)
                if on_result is not None:
                    on_result(tile, actors)
        return results

    return run


def calibrate_camera(
    pairs_dir: str | Path,
    output: str | Path,
    config: CalibrateConfig,
    address: str | None = None,
    progress: bool = True,
    on_result: Callable[[Tile, list], None] | None = None,
) -> PSFField:
    """Calibrate a camera from ``PAIRS_DIR`` (``NAME.target.png`` + ``NAME.photo.*``) on Ray.

    Registration runs as one Ray task per pair and tiles are fitted by ``config.ray.actors`` actors, in the
    rounds of :func:`degtrans.calibrate.pipeline.calibrate_in_rounds` (the local runner's loop).

    Args:
        pairs_dir: directory of pairs.
        output: the field ``.npz`` to write; ``<output>.report.png`` and the resolved config go beside it.
        config: the ``[calibrate]`` section.
        address: ``None`` starts an embedded local Ray; otherwise the cluster to join.

    Returns:
        The recovered ``PSFField`` (diagnostics in its ``meta``).
    """
    ensure_ray(address)
    grid = (config.rows, config.cols)

    def prepare_all(pairs: Pairs, cfg: CalibrateConfig, estimate: PSFField | None) -> list:
        estimate_ref = ray.put(estimate)  # one copy in the object store per round, not one per task
        results: dict = {}
        pending: dict = {}
        queue = list(enumerate(pairs))
        with tqdm(total=len(pairs), desc="register", unit="pair", disable=not progress) as bar:
            while queue or pending:
                # At most ``actors`` registrations at once: the run's parallelism is ``actors``.
                while queue and len(pending) < max(cfg.ray.actors, 1):
                    index, (name, target, photo) = queue.pop(0)
                    ref = _prepare_pair_task.remote(name, target, photo, cfg, grid, estimate_ref)
                    pending[ref] = index
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                results[pending.pop(ref)] = ray.get(ref)
                bar.update(1)
        return [results[index] for index in range(len(pairs))]

    def solve(problem: FitProblem, cfg: CalibrateConfig, start: np.ndarray | None) -> FieldSolution:
        actors = start_fitters(problem, cfg)
        try:
            mapper = ray_mapper(actors, cfg, progress, on_result)
            return solve_field(problem, cfg, mapper, ray_shards(actors), start)
        finally:
            for actor in actors:
                ray.kill(actor)

    return calibrate_in_rounds(find_pairs(Path(pairs_dir).resolve()), output, config, prepare_all, solve)
