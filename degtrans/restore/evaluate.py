"""Compare restoration methods: PSNR / SSIM overall and by field zone, and a picture.

Two modes: patches of a dataset split (:func:`evaluate_methods`), and whole held-out frames
(:func:`evaluate_frames`): clean images simulated through a camera as full sensor frames, restored
whole (networks tile by tile with their true sensor coordinates), scored over the frame and over
its centre, mid and corner zones, with a picture of corner crops.

Methods: ``identity`` (the degraded input), ``wiener`` and ``rl`` (noise-aware classical baselines
with the PSF field; on frames with the frame's own ISP and noise level), and ``ckpt:PATH`` (a
trained FOV-KPN or deep Wiener checkpoint).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from degtrans.config import RestoreConfig, SimulateConfig, from_dict
from degtrans.errors import InputError
from degtrans.field import PSFField
from degtrans.figures import pyplot, save_figure
from degtrans.io import read_image
from degtrans.metrics import psnr, ssim
from degtrans.pairs import source_of, split_of
from degtrans.restore.baselines import SensorNoise, baseline_settings, deconvolve_field
from degtrans.restore.checkpoint import model_from_checkpoint
from degtrans.restore.coords import fov_coords, patch_radius, zone_of
from degtrans.restore.data import PairReader
from degtrans.restore.infer import restore_array
from degtrans.restore.loop import forward_batch
from degtrans.simulate.camera import CameraProfile
from degtrans.simulate.degrade import PairSettings, sample_generator, sample_params, simulate_pair
from degtrans.simulate.isp import ISPParams, ISPRanges
from degtrans.simulate.sources import list_images

ZONES = ("all", "centre", "mid", "corner")
DEFAULT_CONFIG = RestoreConfig()


def _method_fn(method: str, reader: PairReader, config: RestoreConfig, device: torch.device):
    """``fn(batch) -> (B, C, H, W)`` restored in [0, 1] for one method name."""
    if method == "identity":
        return lambda batch: batch["degraded"]
    if method in ("wiener", "rl"):

        def baseline(batch: dict[str, Any]) -> torch.Tensor:
            known = "noise" in batch and "isp" in batch  # the pair's own noise level and ISP draw
            return torch.stack([
                deconvolve_field(
                    batch["degraded"][i], reader.fields[camera], method,
                    offset=(int(batch["y0"][i]), int(batch["x0"][i])),
                    frame_size=(int(batch["frame_h"][i]), int(batch["frame_w"][i])),
                    noise=SensorNoise(*batch["noise"][i].tolist()) if known else None,
                    isp=ISPParams.from_vector(batch["isp"][i : i + 1].double()) if known else None,
                    **baseline_settings(config),
                )
                for i, camera in enumerate(batch["camera"])
            ])  # fmt: skip

        return baseline
    if method.startswith("ckpt:"):
        model = model_from_checkpoint(method[len("ckpt:") :], device=device)[0].eval()
        return torch.no_grad()(
            lambda batch: forward_batch(model, batch, device).float().clamp(0.0, 1.0).cpu()
        )
    raise InputError(f"--method {method!r}: expected identity, wiener, rl or ckpt:PATH")


def _label(method: str) -> str:
    path = Path(method[len("ckpt:") :])
    return f"ckpt:{path.parent.name}/{path.name}" if method.startswith("ckpt:") else method


def _rows(
    labels: list[tuple[str, str]], scores: dict[tuple[str, str], list[tuple[float, float]]]
) -> list[dict[str, Any]]:
    """Rows ``{"method": label, "zone", "count", "psnr", "ssim"}``: means of ``scores`` (NaN for none)."""
    rows = []
    for method, label in labels:
        for zone in ZONES:
            values = scores.get((method, zone), [])
            mean = np.mean(values, axis=0) if values else (math.nan, math.nan)
            rows.append({"method": label, "zone": zone, "count": len(values),
                         "psnr": float(mean[0]), "ssim": float(mean[1])})  # fmt: skip
    return rows


def evaluate_methods(
    data_dir: str | Path,
    methods: list[str],
    split: str = "val",
    out_png: str | Path | None = None,
    config: RestoreConfig = DEFAULT_CONFIG,
    val_fraction: float = 0.1,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """PSNR / SSIM of each method on ``split`` of ``data_dir``, overall and per zone.

    Args:
        methods: ``identity``, ``wiener``, ``rl``, ``ckpt:RUN/best.pt`` ...
        split: ``train``, ``val`` or ``all`` (by ``split_of(sample_id, val_fraction)``).
        out_png: picture of the same crops restored by each method (``config.eval_crops`` rows).
        config: baseline parameters and ``eval_max_samples`` (0: the whole split).

    Returns:
        Rows ``{"method", "zone", "psnr", "ssim", "count"}`` for zones all, centre, mid, corner.
    """
    if not methods:
        raise InputError("evaluate_methods: give at least one --method")
    if split not in ("train", "val", "all"):
        raise InputError(f"--split: expected train, val or all, got {split!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    reader = PairReader(data_dir, val_fraction=val_fraction, with_psf=True)
    fns = {m: _method_fn(m, reader, config, device) for m in methods}
    scores: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    crops: list[dict[str, Any]] = []
    spares: list[dict[str, Any]] = []
    limit = config.eval_max_samples or None
    batches = reader.batches(split, batch_size, shuffle=False, limit=limit)
    for batch in tqdm(batches, desc="evaluate", unit="batch", disable=not progress):
        height, width = batch["clean"].shape[-2:]
        positions = zip(batch["y0"], batch["x0"], batch["frame_h"], batch["frame_w"], strict=True)
        zones = [
            zone_of(patch_radius(int(y), int(x), height, width, int(h), int(w))) for y, x, h, w in positions
        ]
        outputs = {m: fn(batch) for m, fn in fns.items()}
        for method, restored in outputs.items():
            p, s = psnr(restored, batch["clean"]), ssim(restored, batch["clean"])
            for i, zone in enumerate(zones):
                for key in ((method, "all"), (method, zone)):
                    scores[key].append((float(p[i]), float(s[i])))
        for i, zone in enumerate(zones):
            # One crop per zone first; spares (in reading order) fill the remaining rows at the end.
            crop = {
                "sample_id": batch["sample_id"][i], "zone": zone, "degraded": batch["degraded"][i],
                "clean": batch["clean"][i], "restored": {m: outputs[m][i] for m in methods},
            }  # fmt: skip
            if zone not in {c["zone"] for c in crops} and len(crops) < config.eval_crops:
                crops.append(crop)
            elif len(spares) < config.eval_crops:
                spares.append(crop)
    crops = (crops + spares)[: config.eval_crops]
    rows = _rows([(m, _label(m)) for m in methods], scores)
    if out_png is not None and crops:
        draw_comparison(crops, methods, out_png)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A text table: one line per method, PSNR / SSIM per zone (count in the header)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    counts = {r["zone"]: r["count"] for r in rows}
    head = f"{'method':<28}" + "".join(f"{f'{z} (n={counts.get(z, 0)})':>22}" for z in ZONES)
    lines = [head, f"{'':<28}" + "".join(f"{'PSNR dB / SSIM':>22}" for _ in ZONES)]
    for method in methods:
        cells = {r["zone"]: r for r in rows if r["method"] == method}
        lines.append(
            f"{method:<28}" + "".join(f"{cells[z]['psnr']:>14.2f} / {cells[z]['ssim']:.3f}" for z in ZONES)
        )
    return "\n".join(lines)


def draw_comparison(crops: list[dict[str, Any]], methods: list[str], png: str | Path) -> Path:
    """Rows of crops: degraded, each method, clean; PSNR in each title. Written atomically."""
    plt = pyplot()
    columns = ["degraded", *methods, "clean"]
    fig, axes = plt.subplots(
        len(crops), len(columns), figsize=(2.2 * len(columns), 2.3 * len(crops)), squeeze=False
    )
    for row, crop in enumerate(crops):
        for col, name in enumerate(columns):
            image = crop[name] if name in ("degraded", "clean") else crop["restored"][name]
            ax = axes[row][col]
            ax.imshow(np.clip(image.permute(1, 2, 0).numpy(), 0, 1), interpolation="nearest")
            title = _label(name)
            if name != "clean":
                value = float(psnr(image[None], crop["clean"][None])[0])
                title = f"{title}\n{value:.2f} dB"
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(f"{crop['zone']}\n{crop['sample_id']}", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, png, dpi=90)


@dataclass(frozen=True)
class Frame:
    """A held-out frame through a camera: ``degraded``/``clean`` (3, H, W) in [0, 1] and its ISP draw."""

    name: str
    camera: str
    degraded: torch.Tensor
    clean: torch.Tensor
    isp: ISPParams
    noise: SensorNoise


Restorer = Callable[[Frame], torch.Tensor]


def simulate_frame(
    image: np.ndarray, name: str, camera: str, field: PSFField, profile: CameraProfile, config: SimulateConfig
) -> Frame:
    """Simulate ``image (H, W, 3)`` as one whole sensor frame (the dataset's chain, its noise range).

    The field is stretched over the frame when the sizes differ. Randomness depends only on
    ``(config.seed, camera, name)``.
    """
    height, width = image.shape[:2]
    if field.image_size != (height, width):
        field = PSFField(field.psfs, (height, width), field.channels, field.domain, field.meta)
    settings = PairSettings.of(config)
    generator = sample_generator(config.seed, f"frame/{camera}/{name}")
    params = sample_params(generator, profile, ISPRanges(), settings.noise_model(profile))
    clean = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    pair = simulate_pair(clean, field, profile, params, generator, settings)
    shot, read = (float(v[0]) for v in (params.noise.shot, params.noise.read))
    noise = SensorNoise(shot, read) if config.noise else SensorNoise(0.0, 0.0)
    return Frame(name, camera, pair.degraded[0].float(), pair.clean[0].float(), params.isp, noise)


def frame_restorers(
    methods: Sequence[str],
    fields: dict[str, PSFField],
    config: RestoreConfig = DEFAULT_CONFIG,
    device: torch.device | str | None = None,
    side_info: bool = True,
) -> dict[str, Restorer]:
    """``{label: restore(frame) -> (3, H, W)}`` for ``identity``, ``wiener``, ``rl`` and ``ckpt:PATH``.

    ``side_info``: networks are given each frame's noise level and ISP draw; ``False`` restores the
    frame as a photograph, which carries neither (the classical baselines always get both).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def restorer(method: str, model: torch.nn.Module | None = None) -> Restorer:
        def restore(frame: Frame) -> torch.Tensor:
            field, size = fields[frame.camera], tuple(frame.degraded.shape[-2:])
            field = field if field.image_size == size else PSFField(field.psfs, size, field.channels)
            image = frame.degraded.permute(1, 2, 0).numpy()
            known = side_info or model is None
            out = restore_array(image, method=method, model=model, field=field, config=config, device=device,
                                progress=False, noise=frame.noise if known else None,
                                isp=frame.isp if known else None)  # fmt: skip
            return torch.from_numpy(out).permute(2, 0, 1)

        return restore

    restorers: dict[str, Restorer] = {}
    for method in methods:
        if method == "identity":
            restorers[method] = lambda frame: frame.degraded
        elif method in ("wiener", "rl"):
            restorers[method] = restorer(method)
        elif method.startswith("ckpt:"):
            model, _ = model_from_checkpoint(method[len("ckpt:") :], device=device)
            restorers[_label(method)] = restorer("model", model.eval())
        else:
            raise InputError(f"--method {method!r}: expected identity, wiener, rl or ckpt:PATH")
    return restorers


def zone_map(height: int, width: int) -> list[str]:
    """Zone of every pixel of a frame, row-major (``zone_of`` of its normalised radius)."""
    radius = fov_coords(0, 0, height, width, height, width)[0, 2].flatten().tolist()
    return [zone_of(r) for r in radius]


def frame_scores(
    restored: torch.Tensor, clean: torch.Tensor, block: int | None = None
) -> dict[str, tuple[float, float]]:
    """``{zone: (PSNR dB, SSIM)}`` of one frame (3, H, W), zones ``all, centre, mid, corner``.

    A zone's PSNR is over its pixels; its SSIM the mean over the ``block``-pixel blocks whose
    centre lies in it (the whole frame's SSIM for ``all``; NaN for a zone no block centre reaches).
    ``block`` defaults to 32 pixels, smaller on small frames (an eighth of the shorter side, >= 8).
    """
    height, width = clean.shape[-2:]
    block = block or max(8, min(32, height // 8, width // 8))
    squared = ((restored.double() - clean.double()) ** 2).mean(0).flatten()
    zones = np.array(zone_map(height, width))
    whole = (float(psnr(restored[None], clean[None])[0]), float(ssim(restored[None], clean[None])[0]))
    scores = {"all": whole}
    starts = [(y, x) for y in range(0, height - block + 1, block) for x in range(0, width - block + 1, block)]
    blocks_r = torch.stack([restored[:, y : y + block, x : x + block] for y, x in starts])
    blocks_c = torch.stack([clean[:, y : y + block, x : x + block] for y, x in starts])
    block_ssim = ssim(blocks_r, blocks_c)
    block_zone = [zone_of(patch_radius(y, x, block, block, height, width)) for y, x in starts]
    for zone in ZONES[1:]:
        pixels = torch.from_numpy(zones == zone)
        in_zone = [float(v) for v, z in zip(block_ssim, block_zone, strict=True) if z == zone]
        if not bool(pixels.any()):
            continue
        mse = float(squared[pixels].mean())
        scores[zone] = (
            10.0 * math.log10(1.0 / max(mse, 1e-12)),
            float(np.mean(in_zone)) if in_zone else math.nan,
        )
    return scores


def evaluate_frames(
    frames: Sequence[Frame],
    restorers: dict[str, Restorer],
    out_png: str | Path | None = None,
    crop: int = 96,
    max_pictures: int = 2,
    progress: bool = True,
    places: Sequence[str] = ("corner", "centre"),
) -> list[dict[str, Any]]:
    """PSNR / SSIM of each restorer on whole frames, overall and per zone (means over frames).

    Args:
        frames: held-out frames (:func:`simulate_frame`).
        restorers: ``{label: restore(frame)}`` (:func:`frame_restorers`).
        out_png: picture of the ``places`` crops (corner, centre) of the first ``max_pictures`` frames.
        crop: side of those crops in pixels.

    Returns:
        Rows ``{"method", "zone", "psnr", "ssim", "count", "frames"}`` (count: frames; ``frames``:
        ``{"camera/name": [PSNR, SSIM]}`` of each frame), as :func:`evaluate_methods`.
    """
    rows, crops = score_frames(frames, restorers, crop, max_pictures if out_png else 0, progress, places)
    if out_png is not None:
        draw_comparison(crops, list(restorers), out_png)
    return rows


def score_frames(
    frames: Sequence[Frame],
    restorers: dict[str, Restorer],
    crop: int = 96,
    max_pictures: int = 2,
    progress: bool = True,
    places: Sequence[str] = ("corner", "centre"),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """:func:`evaluate_frames`' rows, and the crops of its picture (the top-left corner and/or the
    centre of a frame, ``places``) undrawn: restorers scored apart (in other processes) can be drawn
    side by side afterwards."""
    if not frames:
        raise ValueError("evaluate_frames: no frames to evaluate")
    scores: dict[tuple[str, str], dict[str, tuple[float, float]]] = defaultdict(dict)
    crops: list[dict[str, Any]] = []
    for index, frame in enumerate(tqdm(frames, desc="evaluate", unit="frame", disable=not progress)):
        outputs = {m: fn(frame).float().clamp(0.0, 1.0) for m, fn in restorers.items()}
        for method, restored in outputs.items():
            for zone, value in frame_scores(restored, frame.clean).items():
                scores[(method, zone)][f"{frame.camera}/{frame.name}"] = value
        if index < max_pictures:
            height, width = frame.clean.shape[-2:]
            size = min(crop, height // 2, width // 2)
            corners = {"corner": (0, 0), "centre": ((height - size) // 2, (width - size) // 2)}
            for zone, (y, x) in ((place, corners[place]) for place in places):
                cut = (slice(None), slice(y, y + size), slice(x, x + size))
                crops.append({
                    "sample_id": frame.name, "zone": zone, "degraded": frame.degraded[cut],
                    "clean": frame.clean[cut], "restored": {m: out[cut] for m, out in outputs.items()},
                })  # fmt: skip
    rows = _rows([(m, m) for m in restorers], {key: list(values.values()) for key, values in scores.items()})
    for row in rows:
        row["frames"] = {k: list(v) for k, v in scores.get((row["method"], row["zone"]), {}).items()}
    return rows, crops


# Settings :func:`tune_baselines` searches: the Wiener filter's residual and prior floor, RL's stop.
WIENER_GRID: dict[str, tuple[float, ...]] = {
    "discrepancy": (0.5, 1.0, 2.0),
    "wiener_min_lambda": (0.03, 0.1, 0.3, 1.0, 3.0),
}
RL_GRID: dict[str, tuple[float, ...]] = {"rl_discrepancy": (1.0, 2.0, 4.0, 8.0), "rl_min_iterations": (0, 1)}


def tune_baselines(
    frames: Sequence[Frame],
    fields: dict[str, PSFField],
    config: RestoreConfig = DEFAULT_CONFIG,
    wiener_grid: dict[str, tuple[float, ...]] = WIENER_GRID,
    rl_grid: dict[str, tuple[float, ...]] | None = RL_GRID,
) -> tuple[RestoreConfig, list[dict[str, Any]]]:
    """The classical baselines at their best for a lens: the grid point of each with the highest mean
    whole-frame PSNR on ``frames`` (tuning frames: never the frames the comparison is scored on).
    A grid of ``None`` leaves that method untuned (and unrun).

    Returns:
        ``config`` with the chosen ``[restore]`` settings, and one row per trial
        ``{"method", <setting>: value, ..., "psnr"}``.
    """
    if not frames:
        raise ValueError("tune_baselines: no tuning frames")
    trials: list[dict[str, Any]] = []
    chosen: dict[str, Any] = {}
    for method, grid in (("wiener", wiener_grid), ("rl", rl_grid)):
        if grid is None:
            continue
        best = -math.inf
        for values in itertools.product(*grid.values()):
            settings = dict(zip(grid, values, strict=True))
            restore = frame_restorers([method], fields, dataclasses.replace(config, **settings))[method]
            score = float(
                np.mean([frame_scores(restore(f).float().clamp(0.0, 1.0), f.clean)["all"][0] for f in frames])
            )
            trials.append({"method": method, **settings, "psnr": score})
            if score > best:
                best, best_settings = score, settings
        chosen.update(best_settings)
    return dataclasses.replace(config, **chosen), trials


def held_out_frames(
    data_dir: str | Path, images: Sequence[str | Path], val_fraction: float
) -> tuple[list[Frame], dict[str, PSFField], list[str]]:
    """Simulate the images a dataset did not train on as whole frames of each of its cameras.

    The dataset's own cameras (fields, profiles) and ``[simulate]`` settings are used. An image whose
    name is a source of the dataset's training split is left out (it is not held out).

    Returns:
        The frames, the cameras' fields, and the names left out.
    """
    reader = PairReader(data_dir, val_fraction=val_fraction, with_psf=True)
    manifest, fields = reader.manifest, reader.fields
    settings = {k: v for k, v in manifest.get("config", {}).items() if k != "workers"}
    sim = from_dict({"simulate": settings}, f"{data_dir}/manifest.json").simulate
    ids = [s for shard_ids in reader.sample_ids for s in shard_ids]
    trained = {source_of(s) for s in ids if split_of(s, val_fraction, reader.fallback) == "train"}
    frames, skipped = [], []
    for path in list_images([Path(p) for p in images]):
        if path.stem in trained:
            skipped.append(path.stem)
            continue
        image = read_image(path)
        for camera, entry in manifest["cameras"].items():
            profile = CameraProfile.from_dict(entry["profile"])
            frames.append(simulate_frame(image, path.stem, camera, fields[camera], profile, sim))
    return frames, fields, skipped
