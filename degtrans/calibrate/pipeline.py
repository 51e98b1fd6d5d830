"""The calibration's orchestration: prepare every pair (``calibrate.prepare``), stack them into the
fit's problem, solve the field (tile inits, then the joint solve), alternate registration and PSFs in
rounds, and write the field with its metrics and report.

``degtrans.cluster.calibrate.calibrate_camera`` runs the same steps with Ray tasks and an actor pool;
both share everything here except how the per-pair and per-tile functions are mapped.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from degtrans.calibrate.accuracy import centred_field, field_metrics
from degtrans.calibrate.figure import draw_report
from degtrans.calibrate.fit import FitProblem, TileFit, TileFitError, fit_tile, stage_device
from degtrans.calibrate.joint import MapShards, gather_stats, local_shards, solve_joint
from degtrans.calibrate.photos import find_pairs
from degtrans.calibrate.prepare import PreparedPair, Rejected, prepare_pair
from degtrans.calibrate.priors import support_mask, tile_prior
from degtrans.config import CalibrateConfig, RejectConfig, to_dict, write_resolved
from degtrans.errors import DegtransError
from degtrans.field import PSFField

log = logging.getLogger(__name__)

Tile = tuple[int, int]
# tiles -> {tile: its centre-weighted init (TileFit) or the reason it failed}
TileMapper = Callable[[list[Tile]], dict[Tile, TileFit | str]]


def make_problem(pairs: list[PreparedPair], config: CalibrateConfig) -> FitProblem:
    """Stack prepared pairs (``FitProblem.stack``)."""
    if not pairs:
        raise DegtransError("calibrate: no pair could be registered")
    triples = [(p.target, p.photo, p.mask) for p in pairs]
    return FitProblem.stack(
        triples, tuple(p.name for p in pairs), (config.rows, config.cols), config.psf_size
    )


def local_mapper(problem: FitProblem, config: CalibrateConfig, progress: bool = True) -> TileMapper:
    """Fit tiles' inits one after the other in this process."""

    def run(tiles: list[Tile]) -> dict[Tile, TileFit | str]:
        results: dict[Tile, TileFit | str] = {}
        for r, c in tqdm(tiles, desc="tiles", unit="tile", disable=not progress, leave=False):
            try:
                results[(r, c)] = fit_tile(problem, r, c, config)
            except TileFitError as error:
                results[(r, c)] = str(error)
        return results

    return run


def fill_from_neighbours(psfs: np.ndarray, failed: set[Tile]) -> np.ndarray:
    """Replace failed tiles by the mean of their nearest successful tiles (Chebyshev rings)."""
    rows, cols = psfs.shape[:2]
    good = [(r, c) for r in range(rows) for c in range(cols) if (r, c) not in failed]
    if not good:
        raise DegtransError("calibrate: every tile failed, no field can be produced")
    out = psfs.copy()
    for r, c in failed:
        distance = {t: max(abs(t[0] - r), abs(t[1] - c)) for t in good}
        nearest = min(distance.values())
        out[r, c] = np.mean([psfs[t] for t in good if distance[t] == nearest], axis=0)
    return out


@dataclass(frozen=True)
class FieldSolution:
    psfs: np.ndarray
    fits: dict[Tile, TileFit]
    failed: dict[Tile, str]
    seconds: float


def solve_field(
    problem: FitProblem,
    config: CalibrateConfig,
    mapper: TileMapper,
    shards: MapShards | None = None,
    start: np.ndarray | None = None,
) -> FieldSolution:
    """Init (centre-weighted closed form per tile, or ``start``) → the joint solve of every tile at once
    (``joint_iterations``, ``degtrans.calibrate.joint``, its products by ``shards``: the whole frame in
    this process when ``None``; 0: the init alone).

    ``start`` (rows, cols, C, k, k), e.g. the previous registration round's field, replaces the per-tile
    init of the joint solve: a warm start that the re-registration moved little. A tile no pair covers
    is left out of the joint solve, listed in ``failed`` and filled from its neighbours.
    """
    began = time.perf_counter()
    rows, cols = problem.grid
    tiles = [(r, c) for r in range(rows) for c in range(cols)]
    k, channels = problem.psf_size, problem.channels
    psfs = np.zeros((rows, cols, channels, k, k), np.float32)
    failed: dict[Tile, str] = {}
    fits: dict[Tile, TileFit] = {}
    joint = config.solve.joint_iterations > 0
    if start is not None and joint:
        psfs[:] = start
    else:
        for tile, value in mapper(tiles).items():
            if isinstance(value, str):
                failed[tile] = value
            else:
                fits[tile] = value
                psfs[tile] = value.psf
    if joint:
        joint_began = time.perf_counter()
        shards = shards or local_shards(problem, 1, stage_device(config))
        stats = gather_stats(shards("stats", ()))
        pairs = (stats.coverage > 0).sum(dim=1).reshape(rows, cols).numpy()
        for tile in tiles:
            if pairs[tile] == 0:
                failed[tile] = f"tile {tile}: no registered pair covers it"
                fits.pop(tile, None)
        result = solve_joint(
            shards,
            stats,
            fill_from_neighbours(psfs, set(failed)) if failed else psfs,
            tile_prior(config, channels),
            support_mask(k, config.solve.support_radius),
            config.solve.joint_iterations,
        )
        psfs[:] = result.psfs
        log.info(
            "joint solve: %d CG steps, relative residual %.2e", result.iterations, result.relative_residual
        )
        seconds = (time.perf_counter() - joint_began) / len(tiles)
        observations = stats.observations.reshape(rows, cols).numpy()
        for tile in tiles:
            if tile in failed:
                continue
            fits[tile] = TileFit(
                psf=result.psfs[tile],
                residual=float(result.residual[tile]),
                pairs=int(pairs[tile]),
                pixels=int(observations[tile]),
                seconds=seconds + (fits[tile].seconds if tile in fits else 0.0),
                condition=float(result.condition[tile]),
                observed_fraction=float(result.observed_fraction[tile]),
            )
    psfs_out = fill_from_neighbours(psfs, set(failed)) if failed else psfs
    return FieldSolution(psfs_out, fits, failed, time.perf_counter() - began)


def build_field(
    solution: FieldSolution,
    prepared: list[PreparedPair],
    rejected: list[Rejected],
    config: CalibrateConfig,
) -> PSFField:
    """The ``PSFField`` with per-tile diagnostics in its metadata."""
    rows, cols = config.rows, config.cols
    frame = prepared[0].photo.shape[:2]
    tile_error = np.nanmean(np.stack([p.tile_error for p in prepared]), axis=0)

    def grid_of(fn) -> list[list[float | None]]:
        return [[fn((r, c)) for c in range(cols)] for r in range(rows)]

    def fit_value(name: str, convert=float, missing=None):
        return lambda t: convert(getattr(solution.fits[t], name)) if t in solution.fits else missing

    diagnostics = {
        "final_loss": grid_of(fit_value("residual")),  # the fit's data term
        "residual": grid_of(fit_value("residual")),
        "pairs_used": grid_of(fit_value("pairs", int, 0)),
        "fit_seconds": grid_of(fit_value("seconds")),
        # Conditioning of each tile's closed form: the regularised normal matrix's
        # condition number, and the share of the kernel's frequencies the targets (not the prior) decide.
        "condition": grid_of(fit_value("condition", _finite)),
        "observed_fraction": grid_of(fit_value("observed_fraction", _finite)),
        "registration_error_px": grid_of(lambda t: _finite(tile_error[t])),
        "filled_from_neighbours": grid_of(lambda t: t in solution.failed),
    }
    return PSFField(
        psfs=solution.psfs,
        image_size=frame,
        meta={
            "camera": config.camera,
            "source": "degtrans calibrate",
            "pairs": [
                {
                    "name": p.name,
                    "inliers": p.inliers,
                    "ecc": p.ecc,
                    "homography": p.geometry.homography.tolist(),
                    "tone": p.tone.to_dict(),
                }
                for p in prepared
            ],
            "rejected": [{"name": r.name, "reason": r.reason} for r in rejected],
            "failed_tiles": [
                {"tile": list(t), "reason": reason} for t, reason in sorted(solution.failed.items())
            ],
            "tiles": diagnostics,
            "fit_seconds_total": solution.seconds,
            "config": to_dict(config),
        },
    )


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def split_prepared(
    results: list[PreparedPair | Rejected], focus_ratio: float = RejectConfig.focus_ratio
) -> tuple[list[PreparedPair], list[Rejected]]:
    """Separate registered pairs from rejected ones.

    Also rejected: pairs whose frame differs from the first, and photos out of focus relative to the
    run (sharpness below ``focus_ratio`` times the run's median).
    """
    prepared = [r for r in results if isinstance(r, PreparedPair)]
    rejected = [r for r in results if isinstance(r, Rejected)]
    if prepared:
        frame = prepared[0].photo.shape[:2]
        odd = [p for p in prepared if p.photo.shape[:2] != frame]
        for p in odd:
            rejected.append(Rejected(p.name, f"photo is {p.photo.shape[:2]}, the first photo is {frame}"))
        prepared = [p for p in prepared if p.photo.shape[:2] == frame]
    measured = [p.sharpness for p in prepared if np.isfinite(p.sharpness)]
    if len(measured) >= 3:
        median = float(np.median(measured))
        blurred = [p for p in prepared if p.sharpness < focus_ratio * median]
        rejected += [
            Rejected(p.name, f"out of focus: sharpness {p.sharpness:.3f}, the run's median is {median:.3f}")
            for p in blurred
        ]
        prepared = [p for p in prepared if p not in blurred]
    for item in rejected:
        log.warning("pair %s rejected: %s", item.name, item.reason)
    if not prepared:
        reasons = "; ".join(f"{r.name}: {r.reason}" for r in rejected)
        raise DegtransError(f"calibrate: no pair could be registered ({reasons})")
    return prepared, rejected


def write_outputs(
    field: PSFField,
    problem: FitProblem,
    output: Path,
    config: CalibrateConfig,
    heldout: FitProblem | None = None,
) -> PSFField:
    """Add the metrics (``calibrate.accuracy.field_metrics``) to the field's meta, save it (.npz), its
    report PNG beside it and the resolved config."""
    output = Path(output)
    field = field.with_meta(metrics=field_metrics(field, problem, heldout))
    field.save(output)
    draw_report(field, problem, output.with_suffix(".report.png"))
    write_resolved(config, output)
    return field


Pairs = list[tuple[str, Path, Path]]
# (pairs, config, estimate or None) -> one result per pair: how a runner registers the pairs (in this
# process, or as Ray tasks).
PrepareAll = Callable[[Pairs, CalibrateConfig, PSFField | None], list[PreparedPair | Rejected]]
# (problem, config, warm start or None) -> the solved field: how a runner maps the tiles and the joint
# solve's shards (in this process, or Ray actors).
SolveTiles = Callable[[FitProblem, CalibrateConfig, np.ndarray | None], FieldSolution]


def calibrate_in_rounds(
    pairs: Pairs, output: str | Path, config: CalibrateConfig, prepare_all: PrepareAll, solve: SolveTiles
) -> PSFField:
    """The calibration loop, shared by the local and the Ray runner (which supply ``prepare_all`` and
    ``solve``).

    Registration and the PSFs are solved in turns: the first round registers on the low-pass alone,
    which a large, asymmetric lens PSF still biases (the triplet lens, 256x384: up to 1.2 px of radial
    error at the corners, taken up by the red and blue PSFs against green's centroid prior); each of
    ``config.register.rounds`` further rounds re-registers against the target blurred by the previous field,
    re-centred on green (:func:`centred_field`: the convention), and solves the PSFs again. Rounds before
    the last solve without the centroid prior.

    Returns:
        The recovered field, also written to ``output`` with ``<output>.report.png``.
    """
    estimate: PSFField | None = None
    rounds = 1 + max(config.register.rounds, 0)
    first_rejected: list[Rejected] = []
    for round_ in range(rounds):
        # The photo checks (focus, clipping, right target) are decided in the first round; later rounds
        # only re-register the pairs it kept (a lens near the focus threshold must not flip in and out).
        prepare_config = (
            config
            if round_ == 0
            else dataclasses.replace(config, reject=dataclasses.replace(config.reject, min_sharpness=0.0))
        )
        results = prepare_all(pairs, prepare_config, estimate)
        prepared, rejected = split_prepared(results, config.reject.focus_ratio if round_ == 0 else 0.0)
        if round_ == 0:
            first_rejected = rejected
            pairs = [pair for pair in pairs if pair[0] in {p.name for p in prepared}]
        rejected = first_rejected + [r for r in rejected if r not in first_rejected]
        # ``config.holdout`` pairs (the last ones; never all but one) are set aside for the re-blur check.
        holdout = min(max(config.holdout, 0), len(prepared) - 1)
        problem = make_problem(prepared[: len(prepared) - holdout], config)
        heldout = make_problem(prepared[-holdout:], config) if holdout else None
        # Later rounds start the joint solve from the previous round's (re-centred) field.
        start = None if estimate is None else estimate.psfs.astype(np.float32)
        # Before the last round the PSFs are solved without the centroid prior, so that they take up the
        # geometry's error as a shift and keep their true shape (re-centring then hands registration a
        # faithful PSF).
        solve_config = (
            config
            if round_ == rounds - 1
            else dataclasses.replace(config, solve=dataclasses.replace(config.solve, centroid_weight=0.0))
        )
        solution = solve(problem, solve_config, start)
        estimate = centred_field(solution.psfs, prepared[0].photo.shape[:2])
    field = build_field(solution, prepared, rejected, config)
    return write_outputs(field, problem, Path(output), config, heldout)


def calibrate_local(
    pairs_dir: str | Path,
    output: str | Path,
    config: CalibrateConfig,
    progress: bool = True,
) -> PSFField:
    """Calibrate in this process (no Ray): same result as ``degtrans.cluster.calibrate.calibrate_camera``
    (:func:`calibrate_in_rounds` with in-process registration and tile fits).

    Returns:
        The recovered field, also written to ``output`` with ``<output>.report.png``.
    """
    grid = (config.rows, config.cols)
    round_number = iter(range(1, 1 << 30))

    def prepare_all(pairs: Pairs, cfg: CalibrateConfig, estimate: PSFField | None) -> list:
        desc = f"register ({next(round_number)})"
        return [
            prepare_pair(name, t, p, cfg, grid, estimate)
            for name, t, p in tqdm(pairs, desc=desc, disable=not progress)
        ]

    def solve(problem: FitProblem, cfg: CalibrateConfig, start: np.ndarray | None) -> FieldSolution:
        return solve_field(problem, cfg, local_mapper(problem, cfg, progress), start=start)

    return calibrate_in_rounds(find_pairs(pairs_dir), output, config, prepare_all, solve)
