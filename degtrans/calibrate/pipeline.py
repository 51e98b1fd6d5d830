"""The calibration pipeline without Ray: register each pair, stage I, stage II over tiles, write the field.

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

import cv2
import numpy as np
from tqdm import tqdm

from degtrans.calibrate.fit import FitProblem, TileFit, TileFitError, fit_tile, stage_device, tile_prior
from degtrans.calibrate.joint import MapShards, gather_stats, local_shards, solve_joint
from degtrans.calibrate.losses import support_mask
from degtrans.calibrate.metrics import padded_psfs, relative_l2
from degtrans.calibrate.photos import PHOTO_SUFFIXES, find_pairs
from degtrans.calibrate.quality import PhotoRejected, check_clipping, correlation, sharpness
from degtrans.calibrate.register import (
    Geometry,
    RegistrationError,
    Render,
    check_homography,
    coarse_geometry,
    magnification,
    refine,
    tile_shifts,
    tilt_degrees,
    to_gray,
    warp_to_photo,
)
from degtrans.calibrate.targets import Layout, read_layout
from degtrans.calibrate.transfer import (
    SATURATED,
    ToneColour,
    fit_colour_blurred,
    fit_patches,
    fit_tone_colour,
    linearise,
    patch_samples,
    to_camera,
)
from degtrans.config import CalibrateConfig
from degtrans.field import PSFField, normalise_psfs
from degtrans.io import read_image

log = logging.getLogger(__name__)

Tile = tuple[int, int]
# (tiles, field or None, descend) -> {tile: TileFit or the reason it failed}
TileMapper = Callable[[list[Tile], np.ndarray | None, bool], dict[Tile, TileFit | str]]


@dataclass(frozen=True, eq=False)
class PreparedPair:
    """A registered pair in linear camera RGB on the photo grid (stage I applied).

    ``target``/``photo``: (H, W, 3) float32; ``mask``: (H, W) bool where the target is valid;
    ``tile_error``: (rows, cols) residual misregistration in pixels (NaN: not measurable);
    ``geometry``: the photo → target map (homography and distortion); ``sharpness``: mid-band contrast
    transfer (``quality.sharpness``); ``residual_px``: RMS tile residual of the geometry.
    """

    name: str
    target: np.ndarray
    photo: np.ndarray
    mask: np.ndarray
    homography: np.ndarray
    inliers: int
    ecc: float
    tone: ToneColour
    tile_error: np.ndarray
    geometry: Geometry | None = None
    sharpness: float = float("nan")
    residual_px: float = float("nan")
    method: str = "features"


@dataclass(frozen=True)
class Rejected:
    """A pair left out, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class PoseFit:
    """One camera pose: its geometry, stage I, and how the registration went."""

    geometry: Geometry
    tone: ToneColour
    inliers: int
    method: str
    correlation: float
    residual_px: float


def field_render(field: PSFField | None, channel: int = 1) -> Render | None:
    """Blur one channel as ``field`` does (registration against the blurred target); ``None``: no field."""
    if field is None:
        return None
    import torch

    from degtrans.kernels import sv_conv2d

    channel = min(channel, field.psfs.shape[2] - 1)
    # On a GPU when this process sees one (the local runner on a GPU machine; Ray's registration tasks
    # see none): a large frame's blur is most of a registration step on the CPU.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    psfs = torch.from_numpy(np.ascontiguousarray(field.psfs[:, :, channel : channel + 1], dtype=np.float32))
    psfs = psfs.to(device)

    def render(image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
        with torch.no_grad():
            # The FFT product convolution ("cpu" backend, any device): on a GPU, FFTs are expected to
            # beat the direct Triton kernel at calibration's large k (not measured on a GPU yet).
            return sv_conv2d(x, psfs, frame_size=field.image_size, backend="cpu")[0, 0].cpu().numpy()

    return render


def register_pose(
    target: np.ndarray,
    photo: np.ndarray,
    layout: Layout | None,
    config: CalibrateConfig,
    grid: tuple[int, int],
    field: PSFField | None = None,
    linear: bool = False,
) -> PoseFit:
    """Coarse geometry → stage I → fine geometry on linear camera green (the reference channel).

    Stage I needs only the coarse geometry: patch interiors keep a margin of the PSF's reach plus the
    markers' few pixels of error. The fine step then compares the linearised photo with the target in
    camera RGB, blurred by ``field`` when one is given (the true or the current PSF estimate).

    Raises:
        RegistrationError, PhotoRejected, ValueError: the pose cannot be used (the message says why).
    """
    geometry, inliers, method = coarse_geometry(target, photo, layout, config.min_inliers)
    tilt = tilt_degrees(geometry.homography, target.shape[:2], photo.shape[:2])
    if tilt > config.max_tilt_deg:
        raise PhotoRejected(
            f"steep angle: the chart is tilted about {tilt:.0f} degrees (at most {config.max_tilt_deg:g})"
        )
    fit_gamma = config.fit_gamma and not linear
    exclude = (photo >= SATURATED).any(axis=-1)
    if layout is not None and layout.patches:
        # The PSF reaches psf_size/2 photo pixels; the markers' geometry is good to a few. In target pixels:
        margin = (config.psf_size // 2 + 4) / magnification(geometry.homography, target.shape[:2])
        tone = fit_patches(patch_samples(photo, geometry, layout, margin), fit_gamma)
    else:
        # No patches: refine on luminance, then the low-pass tone fit (weaker, see ``transfer``).
        geometry, _, _ = refine(
            to_gray(target),
            to_gray(photo),
            geometry,
            sigma=config.register_sigma,
            distortion="none",
            grid=grid,
        )
        warped, mask = warp_to_photo(target, geometry, photo.shape[:2])
        tone = fit_tone_colour(
            warped, photo, mask, sigma=max(6.0, 1.5 * config.psf_size), fit_gamma=fit_gamma
        )
    geometry, corr, residual = refine(
        to_camera(target, tone)[..., 1],
        linearise(photo, tone)[..., 1],
        geometry,
        sigma=config.register_sigma,
        render=field_render(field),
        distortion=config.distortion,
        threshold_px=config.distortion_threshold_px,
        grid=grid,
        exclude=exclude,
    )
    check_homography(geometry.homography, target.shape[:2], photo.shape[:2])
    return PoseFit(geometry, tone, inliers, method, corr, residual)


def refit_colour(
    warped: np.ndarray,
    linear_photo: np.ndarray,
    mask: np.ndarray,
    field: PSFField,
    tone: ToneColour,
    psf_size: int,
) -> ToneColour:
    """Stage I again through the current PSF estimate (``transfer.fit_colour_blurred``): each target
    channel blurred by each channel's PSFs, fitted on the pixels whose PSF footprint is valid."""
    import torch

    from degtrans.kernels import sv_conv2d

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    psfs = torch.from_numpy(np.ascontiguousarray(field.psfs, dtype=np.float32)).to(device)
    blurred = np.empty((*warped.shape[:2], 3, 3), np.float32)
    with torch.no_grad():
        for j in range(3):
            plane = torch.from_numpy(np.ascontiguousarray(warped[..., j], dtype=np.float32)).to(device)
            images = sv_conv2d(plane[None, None].expand(1, 3, *plane.shape).contiguous(), psfs, backend="cpu")
            blurred[..., j] = images[0].cpu().numpy().transpose(1, 2, 0)
    inside = cv2.erode(mask.astype(np.uint8), np.ones((psf_size, psf_size), np.uint8), borderValue=0) > 0
    return fit_colour_blurred(blurred, linear_photo, inside, tone)


def _pose_reference(target_path: Path, name: str) -> tuple[Path, Path]:
    """The pair ``name`` beside ``target_path`` (the chart that registers this pattern's pose)."""
    target = target_path.parent / f"{name}.target.png"
    photos = [
        p for p in sorted(target_path.parent.glob(f"{name}.photo.*")) if p.suffix.lower() in PHOTO_SUFFIXES
    ]
    if not target.is_file() or not photos:
        raise ValueError(
            f"the pose's chart {name!r} (geometry_from) has no target/photo pair beside {target_path}"
        )
    return target, photos[0]


def _is_linear(photo_path: Path) -> bool:
    return photo_path.suffix.lower() not in (".png", ".tif", ".tiff")


def prepare_pair(
    name: str,
    target_path: Path,
    photo_path: Path,
    config: CalibrateConfig,
    grid: tuple[int, int],
    field: PSFField | None = None,
) -> PreparedPair | Rejected:
    """Read, check, register and linearise one pair; an unusable pair comes back ``Rejected`` with why.

    A pattern whose layout names ``geometry_from`` takes the geometry and stage I of that chart's photo
    (same pose); it is still checked on its own (clipping, focus, that it shows this target).

    Args:
        field: a PSF field to blur the target with during fine registration (the current estimate, or
            the truth in tests); ``None`` relies on the low-pass alone.
    """
    try:
        target = read_image(target_path)
        photo = read_image(photo_path)
        layout = read_layout(target_path)
        check_clipping(photo, config.max_clipped)
        if layout is not None and layout.geometry_from:
            ref_target, ref_photo = _pose_reference(Path(target_path), layout.geometry_from)
            reference = read_image(ref_photo)
            if reference.shape != photo.shape:
                raise ValueError(
                    f"photo is {photo.shape[:2]}, its pose's chart photo is {reference.shape[:2]}"
                )
            pose = register_pose(
                read_image(ref_target),
                reference,
                read_layout(ref_target),
                config,
                grid,
                field,
                _is_linear(ref_photo),
            )
        else:
            pose = register_pose(target, photo, layout, config, grid, field, _is_linear(photo_path))
        warped, mask = warp_to_photo(target, pose.geometry, photo.shape[:2], config.target_model)
        tone = pose.tone
        if field is not None and config.refit_colour:
            tone = refit_colour(warped, linearise(photo, tone), mask, field, tone, config.psf_size)
        camera_target, linear_photo = to_camera(warped, tone), linearise(photo, tone)
        match = correlation(camera_target[..., 1], linear_photo[..., 1], mask, config.register_sigma)
        if match < config.min_correlation:
            raise PhotoRejected(
                f"wrong target: the registered target and photo correlate at {match:.2f}"
                f" (at least {config.min_correlation:g})"
            )
        sharp = sharpness(camera_target[..., 1], linear_photo[..., 1], mask)
        if sharp < config.min_sharpness:
            raise PhotoRejected(
                f"out of focus: mid-band contrast transfer {sharp:.3f} (at least {config.min_sharpness:g})"
            )
    except (RegistrationError, ValueError) as error:
        return Rejected(name, str(error))
    shifts = tile_shifts(
        to_camera(target, tone)[..., 1],
        linear_photo[..., 1],
        pose.geometry,
        grid,
        sigma=config.register_sigma,
        render=field_render(field),
    )
    return PreparedPair(
        name=name,
        target=camera_target,
        photo=linear_photo,
        mask=mask,
        homography=pose.geometry.homography,
        inliers=pose.inliers,
        ecc=pose.correlation,
        tone=tone,
        tile_error=np.hypot(shifts[..., 0], shifts[..., 1]),
        geometry=pose.geometry,
        sharpness=sharp,
        residual_px=pose.residual_px,
        method=pose.method,
    )


def make_problem(pairs: list[PreparedPair], config: CalibrateConfig) -> FitProblem:
    """Stack prepared pairs; a pixel observes only if its whole ``k x k`` footprint is valid target."""
    if not pairs:
        raise ValueError("calibrate: no pair could be registered")
    k = config.psf_size
    kernel = np.ones((k, k), np.uint8)
    masks = np.stack([cv2.erode(p.mask.astype(np.uint8), kernel, borderValue=0) > 0 for p in pairs])
    return FitProblem(
        targets=np.stack([p.target.transpose(2, 0, 1) for p in pairs]).astype(np.float32),
        photos=np.stack([p.photo.transpose(2, 0, 1) for p in pairs]).astype(np.float32),
        masks=masks,
        names=tuple(p.name for p in pairs),
        grid=(config.rows, config.cols),
        psf_size=k,
    )


def make_problems(pairs: list[PreparedPair], config: CalibrateConfig) -> tuple[FitProblem, FitProblem | None]:
    """The fitted problem and, with ``config.holdout`` pairs set aside (the last ones; never all but
    one), the held-out problem that the re-blur check uses."""
    holdout = min(max(config.holdout, 0), max(len(pairs) - 1, 0))
    if holdout == 0:
        return make_problem(pairs, config), None
    return make_problem(pairs[:-holdout], config), make_problem(pairs[-holdout:], config)


def local_mapper(problem: FitProblem, config: CalibrateConfig, progress: bool = True) -> TileMapper:
    """Fit tiles one after the other in this process."""

    def run(tiles: list[Tile], field: np.ndarray | None, descend: bool) -> dict[Tile, TileFit | str]:
        results: dict[Tile, TileFit | str] = {}
        for r, c in tqdm(tiles, desc="tiles", unit="tile", disable=not progress, leave=False):
            try:
                results[(r, c)] = fit_tile(problem, r, c, config, field, descend)
            except TileFitError as error:
                results[(r, c)] = str(error)
        return results

    return run


def fill_from_neighbours(psfs: np.ndarray, failed: set[Tile]) -> np.ndarray:
    """Replace failed tiles by the mean of their nearest successful tiles (Chebyshev rings)."""
    rows, cols = psfs.shape[:2]
    good = [(r, c) for r in range(rows) for c in range(cols) if (r, c) not in failed]
    if not good:
        raise ValueError("calibrate: every tile failed, no field can be produced")
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
    """Init (centre-weighted closed form per tile, or ``start``) → ``refine_rounds`` sweeps of the exact
    model → the joint solve of every tile at once (``joint_iterations``, ``degtrans.calibrate.joint``,
    its products by ``shards``: the whole frame in this process when ``None``) → descent round.

    ``start`` (rows, cols, C, k, k), e.g. the previous registration round's field, replaces the per-tile
    init of the joint solve (Fourier solver): a warm start that the re-registration moved little.

    A sweep visits the tiles in four colour classes (row and column parity): a tile's eight neighbours
    all have other colours, so each class is fitted against the newest neighbours (block Gauss-Seidel,
    tiles of a class in parallel), and the update is over-relaxed by ``relaxation``. Measured on the
    triplet lens (3x4 tiles, k = 31, noise-free, true geometry): Jacobi rounds left 0.086 median pixel
    error after 2 rounds and 0.062 after 7; two sweeps 0.073; the joint solve 0.078 in one pass, so it
    is the default and sweeps are optional. A tile no pair covers is left out of the joint solve, listed
    in ``failed`` and filled from its neighbours.
    """
    began = time.perf_counter()
    rows, cols = problem.grid
    tiles = [(r, c) for r in range(rows) for c in range(cols)]
    k, channels = problem.psf_size, problem.channels
    psfs = np.zeros((rows, cols, channels, k, k), np.float32)
    failed: dict[Tile, str] = {}
    fits: dict[Tile, TileFit] = {}

    def run(subset: list[Tile], use_field: bool, descend: bool, relaxation: float = 1.0) -> None:
        current = fill_from_neighbours(psfs, set(failed)) if use_field else None
        results = mapper(subset, current, descend)
        for tile, value in results.items():
            if isinstance(value, str):
                failed[tile] = value
                fits.pop(tile, None)
                continue
            failed.pop(tile, None)
            fits[tile] = value
            new = value.psf
            if relaxation != 1.0 and current is not None:
                new = normalise_psfs(current[tile] + relaxation * (value.psf - current[tile]))
            psfs[tile] = new

    joint = config.joint_iterations > 0 and config.solver == "fourier"
    if start is not None and joint:
        psfs[:] = start
    else:
        run(tiles, use_field=False, descend=False)
    parities = ((0, 0), (0, 1), (1, 0), (1, 1))
    colours = [[t for t in tiles if (t[0] % 2, t[1] % 2) == parity] for parity in parities]
    for _ in range(config.refine_rounds):
        for subset in colours:
            if subset:
                run(subset, use_field=True, descend=False, relaxation=config.relaxation)
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
            support_mask(k, config.support_radius),
            config.joint_iterations,
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
            residual = float(result.residual[tile])
            fits[tile] = TileFit(
                row=tile[0],
                col=tile[1],
                psf=result.psfs[tile],
                loss=residual,
                residual=residual,
                pairs=int(pairs[tile]),
                pixels=int(observations[tile]),
                seconds=seconds + (fits[tile].seconds if tile in fits else 0.0),
                condition=float(result.condition[tile]),
                observed_fraction=float(result.observed_fraction[tile]),
            )
    if config.iterations > 0:
        run(tiles, use_field=True, descend=True)
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
    tile_error = np.nanmean(np.stack([p.tile_error for p in prepared]), axis=0) if prepared else None

    def grid_of(fn) -> list[list[float | None]]:
        return [[fn((r, c)) for c in range(cols)] for r in range(rows)]

    def fit_value(name: str):
        return lambda t: float(getattr(solution.fits[t], name)) if t in solution.fits else None

    diagnostics = {
        "final_loss": grid_of(fit_value("loss")),
        "residual": grid_of(fit_value("residual")),
        "pairs_used": grid_of(lambda t: solution.fits[t].pairs if t in solution.fits else 0),
        "fit_seconds": grid_of(fit_value("seconds")),
        # Conditioning of each tile's closed form (Fourier solver): the regularised normal matrix's
        # condition number, and the share of the kernel's frequencies the targets (not the prior) decide.
        "condition": grid_of(lambda t: _finite(solution.fits[t].condition) if t in solution.fits else None),
        "observed_fraction": grid_of(
            lambda t: _finite(solution.fits[t].observed_fraction) if t in solution.fits else None
        ),
        "registration_error_px": grid_of(
            lambda t: None if tile_error is None or np.isnan(tile_error[t]) else float(tile_error[t])
        ),
        "filled_from_neighbours": grid_of(lambda t: t in solution.failed),
    }
    from degtrans.config import to_dict

    return PSFField(
        psfs=solution.psfs,
        image_size=frame,
        meta={
            "camera": config.camera,
            "source": "degtrans calibrate",
            "psf_param": config.psf_param,
            "pairs": [
                {
                    "name": p.name,
                    "inliers": p.inliers,
                    "ecc": p.ecc,
                    "homography": p.homography.tolist(),
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
    results: list[PreparedPair | Rejected], focus_ratio: float = CalibrateConfig.focus_ratio
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
        for p in blurred:
            rejected.append(
                Rejected(
                    p.name, f"out of focus: sharpness {p.sharpness:.3f}, the run's median is {median:.3f}"
                )
            )
        prepared = [p for p in prepared if p not in blurred]
    for item in rejected:
        log.warning("pair %s rejected: %s", item.name, item.reason)
    if not prepared:
        reasons = "; ".join(f"{r.name}: {r.reason}" for r in rejected)
        raise ValueError(f"calibrate: no pair could be registered ({reasons})")
    return prepared, rejected


def write_outputs(
    field: PSFField,
    problem: FitProblem,
    output: Path,
    config: CalibrateConfig,
    heldout: FitProblem | None = None,
) -> PSFField:
    """Add the metrics (``calibrate.metrics.field_metrics``) to the field's meta, save it (.npz), its
    report PNG beside it and the resolved config."""
    from degtrans.calibrate.metrics import field_metrics
    from degtrans.calibrate.report import draw_report
    from degtrans.config import write_resolved

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
    ``config.register_rounds`` further rounds re-registers against the target blurred by the previous field,
    re-centred on green (:func:`centred_field`: the convention), and solves the PSFs again. Rounds before
    the last solve without the centroid prior (:func:`round_config`).

    Returns:
        The recovered field, also written to ``output`` with ``<output>.report.png``.
    """
    estimate: PSFField | None = None
    rounds = 1 + max(config.register_rounds, 0)
    first_rejected: list[Rejected] = []
    for round_ in range(rounds):
        # The photo checks (focus, clipping, right target) are decided in the first round; later rounds
        # only re-register the pairs it kept (a lens near the focus threshold must not flip in and out).
        prepare_config = config if round_ == 0 else dataclasses.replace(config, min_sharpness=0.0)
        results = prepare_all(pairs, prepare_config, estimate)
        prepared, rejected = split_prepared(results, config.focus_ratio if round_ == 0 else 0.0)
        if round_ == 0:
            first_rejected = rejected
            pairs = [pair for pair in pairs if pair[0] in {p.name for p in prepared}]
        rejected = first_rejected + [r for r in rejected if r not in first_rejected]
        problem, heldout = make_problems(prepared, config)
        # Later rounds start the joint solve from the previous round's (re-centred) field.
        start = None if estimate is None else estimate.psfs.astype(np.float32)
        solution = solve(problem, round_config(config, round_ == rounds - 1), start)
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


def round_config(config: CalibrateConfig, last: bool) -> CalibrateConfig:
    """The stage II config of one registration round: before the last round the PSFs are solved
    without the centroid prior, so that they take up the geometry's error as a shift and keep their
    true shape (re-centring then hands registration a faithful PSF), and without the descent round
    (``iterations``: only the last field is kept); the last round uses ``config``."""
    return config if last else dataclasses.replace(config, centroid_weight=0.0, iterations=0)


def centred_field(psfs: np.ndarray, frame: tuple[int, int], reference: int = 1) -> PSFField:
    """A field of ``psfs`` (rows, cols, C, k, k) shifted tile by tile so that channel ``reference``'s
    centroid is at the kernel centre, every channel by the same amount (lateral colour is kept)."""
    reference = min(reference, psfs.shape[2] - 1)
    shift = -mean_centroid(psfs[:, :, reference : reference + 1])
    return PSFField(normalise_psfs(_shift_psfs(psfs.astype(np.float64), shift)), frame)


def psf_error(recovered: PSFField, truth: PSFField, align: bool = False) -> np.ndarray:
    """Per-tile relative L2 error ``||h - h_true|| / ||h_true||`` over channels and pixels: (rows, cols).

    Kernels of different sizes are compared after zero-padding the smaller one about its centre.
    With ``align``, each true tile PSF is first shifted (all channels together, by a Fourier phase
    ramp) so that its mean centroid over channels matches the recovered one: registration cannot tell
    a PSF's centroid offset from geometric distortion (a homography absorbs the radial shift that
    coma and distortion give a real lens), so that offset is not the calibration's to recover.
    Relative shifts between channels (lateral colour) are kept and still count.
    """
    if recovered.grid != truth.grid or len(recovered.channels) != len(truth.channels):
        raise ValueError(
            f"psf_error: grids/channels differ: {recovered.grid}x{len(recovered.channels)} vs"
            f" {truth.grid}x{len(truth.channels)}"
        )
    a, b = padded_psfs(recovered, truth)
    if align:
        b = _shift_psfs(b, mean_centroid(a) - mean_centroid(b))
    return relative_l2(a, b)


def mean_centroid(psfs: np.ndarray) -> np.ndarray:
    """(rows, cols, 2) centroid (dy, dx) in pixels about the kernel centre, averaged over channels."""
    k = psfs.shape[-1]
    coords = np.arange(k, dtype=np.float64) - k // 2
    total = psfs.sum(axis=(-1, -2))
    cy = (psfs.sum(axis=-1) * coords).sum(axis=-1) / total
    cx = (psfs.sum(axis=-2) * coords).sum(axis=-1) / total
    return np.stack([cy.mean(axis=-1), cx.mean(axis=-1)], axis=-1)


def _shift_psfs(psfs: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Shift each tile's PSFs ``(rows, cols, C, k, k)`` by ``shift (rows, cols, 2)`` pixels ``(dy, dx)``
    (sub-pixel, Fourier phase ramp), clipped and renormalised to each PSF's sum.

    The kernel sits in the middle of a grid three times its size, so that a shift of up to ``k`` pixels
    either way moves content into zeros instead of wrapping it round; what leaves the ``k x k`` window
    is cut (not folded back onto the other side).
    """
    k = psfs.shape[-1]
    n = 3 * k
    padded = np.zeros((*psfs.shape[:-2], n, n))
    padded[..., k : 2 * k, k : 2 * k] = psfs
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    shift = np.asarray(shift, np.float64)
    ramp = np.exp(-2j * np.pi * (fy * shift[..., 0, None, None] + fx * shift[..., 1, None, None]))
    moved = np.fft.ifft2(np.fft.fft2(padded) * ramp[:, :, None]).real[..., k : 2 * k, k : 2 * k]
    moved = np.clip(moved, 0.0, None)
    return moved / moved.sum(axis=(-1, -2), keepdims=True) * psfs.sum(axis=(-1, -2), keepdims=True)
