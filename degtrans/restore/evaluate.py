"""Compare restoration methods on a dataset split: PSNR / SSIM overall and by field zone, and a picture.

Methods: ``identity`` (the degraded input), ``wiener`` and ``rl`` (classical baselines with the
dataset's PSF field), and ``ckpt:PATH`` (a trained FOV-KPN or deep Wiener checkpoint).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from degtrans.config import RestoreConfig
from degtrans.figures import pyplot, save_figure
from degtrans.metrics import psnr, ssim
from degtrans.restore.baselines import deconvolve_field
from degtrans.restore.coords import patch_radius, zone_of
from degtrans.restore.data import PairReader

ZONES = ("all", "centre", "mid", "corner")
DEFAULT_CONFIG = RestoreConfig()


def _method_fn(method: str, reader: PairReader, config: RestoreConfig, device: torch.device):
    """``fn(batch) -> (B, C, H, W)`` restored in [0, 1] for one method name."""
    if method == "identity":
        return lambda batch: batch["degraded"]
    if method in ("wiener", "rl"):

        def baseline(batch: dict[str, Any]) -> torch.Tensor:
            outs = []
            for i, camera in enumerate(batch["camera"]):
                outs.append(
                    deconvolve_field(
                        batch["degraded"][i],
                        reader.fields[camera],
                        method,
                        offset=(int(batch["y0"][i]), int(batch["x0"][i])),
                        frame_size=(int(batch["frame_h"][i]), int(batch["frame_w"][i])),
                        snr=config.wiener_snr,
                        iterations=config.rl_iterations,
                        linearize=config.linearize,
                    )  # fmt: skip
                )
            return torch.stack(outs)

        return baseline
    if method.startswith("ckpt:"):
        from degtrans.restore.checkpoint import model_from_checkpoint

        model, _ = model_from_checkpoint(method[len("ckpt:") :], device=device)

        @torch.no_grad()
        def network(batch: dict[str, Any]) -> torch.Tensor:
            psf = batch["psf"].to(device) if model.needs_psf else None
            out = model(batch["degraded"].to(device), batch["coords"].to(device), psf)
            return out.float().clamp(0.0, 1.0).cpu()

        return network
    raise ValueError(f"--method {method!r}: expected identity, wiener, rl or ckpt:PATH")


def _label(method: str) -> str:
    return (
        f"ckpt:{Path(method[5:]).parent.name}/{Path(method[5:]).name}"
        if method.startswith("ckpt:")
        else method
    )


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
        raise ValueError("evaluate_methods: give at least one --method")
    if split not in ("train", "val", "all"):
        raise ValueError(f"--split: expected train, val or all, got {split!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    reader = PairReader(data_dir, val_fraction=val_fraction, with_psf=True)
    fns = {m: _method_fn(m, reader, config, device) for m in methods}
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    crops: list[dict[str, Any]] = []
    spares: list[dict[str, Any]] = []
    zones_shown: set[str] = set()
    limit = config.eval_max_samples or None
    batches = reader.batches(split, batch_size, shuffle=False, limit=limit)
    for batch in tqdm(batches, desc="evaluate", unit="batch", disable=not progress):
        zones = [
            zone_of(
                patch_radius(
                    int(y), int(x), batch["clean"].shape[-2], batch["clean"].shape[-1], int(h), int(w)
                )
            )
            for y, x, h, w in zip(batch["y0"], batch["x0"], batch["frame_h"], batch["frame_w"], strict=True)
        ]
        outputs = {m: fn(batch) for m, fn in fns.items()}
        for method, restored in outputs.items():
            p, s = psnr(restored, batch["clean"]), ssim(restored, batch["clean"])
            for i, zone in enumerate(zones):
                for key in ((method, "all"), (method, zone)):
                    sums[key][0] += float(p[i])
                    sums[key][1] += float(s[i])
                    sums[key][2] += 1
        for i, zone in enumerate(zones):
            # One crop per zone first; spares (in reading order) fill the remaining rows at the end.
            crop = {
                "sample_id": batch["sample_id"][i], "zone": zone, "degraded": batch["degraded"][i],
                "clean": batch["clean"][i], "restored": {m: outputs[m][i] for m in methods},
            }  # fmt: skip
            if zone not in zones_shown and len(crops) < config.eval_crops:
                zones_shown.add(zone)
                crops.append(crop)
            elif len(spares) < config.eval_crops:
                spares.append(crop)
    crops = (crops + spares)[: config.eval_crops]
    rows = []
    for method in methods:
        for zone in ZONES:
            total_p, total_s, count = sums.get((method, zone), [0.0, 0.0, 0])
            nan = float("nan")
            rows.append({
                "method": _label(method), "zone": zone, "count": int(count),
                "psnr": total_p / count if count else nan, "ssim": total_s / count if count else nan,
            })  # fmt: skip
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
