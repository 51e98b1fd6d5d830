"""Simulation throughput: bare blur vs the full pair pipeline vs written shards, 1 and 2 Ray workers.

256x256 patches, 31x31 PSFs on a 6x8 grid. Every ratio compares numbers measured in this run:
``pipeline / blur`` (target <= 2: ISP, noise, demosaic, encoding and Parquet cost no more than the
optics) and ``2 workers / 1 worker`` (scaling). Prints a table and writes
``benchmarks/results/simulate.json``.

    .venv/bin/python benchmarks/simulate.py [--samples 12] [--patch 256] [--psf 31]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from degtrans.config import SimulateConfig, to_dict
from degtrans.field import PSFField
from degtrans.simulate.camera import CameraProfile
from degtrans.simulate.degrade import blur, context_window, sample_generator
from degtrans.simulate.optics import lens_field
from degtrans.simulate.plan import plan_shards, resolve_cameras, shard_settings
from degtrans.simulate.shards import simulate_sample, write_shard
from degtrans.simulate.sources import bundled_images, list_images, load_source, scan_sources

RESULTS = Path(__file__).resolve().parent / "results"


def _rate(count: int, seconds: float, patch: int) -> dict[str, float]:
    mpix = count * patch * patch / seconds / 1e6
    return {"pairs_per_s": count / seconds, "mpix_per_s": mpix, "seconds": seconds}


def _blur_once(image: np.ndarray, field: PSFField, patch: int, sample_id: str) -> None:
    """The optics alone: the PSF field on one patch plus its context, as the pipeline does it."""
    height, width = image.shape[:2]
    g = sample_generator(0, sample_id)
    y0 = int(torch.randint(0, height - patch + 1, (1,), generator=g))
    x0 = int(torch.randint(0, width - patch + 1, (1,), generator=g))
    top, bottom, left, right = context_window(y0, x0, (patch, patch), (height, width), field.kernel_size)
    crop = torch.from_numpy(np.ascontiguousarray(image[top:bottom, left:right])).permute(2, 0, 1)[None]
    blur(crop, field, offset=(top, left), frame_size=(height, width))


def bench_blur_vs_pipeline(image, field, camera, settings, samples: int, patch: int) -> dict[str, dict]:
    """Blur alone and the whole pair (unprocess, blur, mosaic, noise, demosaic, process, uint16),
    interleaved sample by sample so that load from other processes hits both alike; median times."""
    times: dict[str, list[float]] = {"blur": [], "pipeline": []}
    for i in range(samples):
        sample_id = f"cam/img/p{i:02d}"
        start = time.perf_counter()
        _blur_once(image, field, patch, sample_id)
        times["blur"].append(time.perf_counter() - start)
        start = time.perf_counter()
        simulate_sample(image, field, camera, sample_id, settings)
        times["pipeline"].append(time.perf_counter() - start)
    return {name: _rate(1, float(np.median(t)), patch) for name, t in times.items()}


def bench_shards(specs, patch: int, workers: int | None) -> dict[str, float]:
    """Whole shards written to Parquet: in-process (``workers=None``) or as Ray tasks."""
    rows = sum(len(s.samples) for s in specs)
    if workers is None:
        start = time.perf_counter()
        for spec in specs:
            write_shard(spec)
        return _rate(rows, time.perf_counter() - start, patch)
    from degtrans.cluster.synthesize import ray_map

    start = time.perf_counter()
    for _ in ray_map(workers)(specs):
        pass
    return _rate(rows, time.perf_counter() - start, patch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=12, help="pairs per measurement")
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--psf", type=int, default=31)
    parser.add_argument("--grid", default="6x8")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray scaling measurement")
    args = parser.parse_args()
    rows, cols = (int(v) for v in args.grid.split("x"))
    torch.set_num_threads(1)  # one worker = one core, like a Ray task with num_cpus=1

    work = Path(tempfile.mkdtemp(prefix="degtrans-bench-"))
    paths = bundled_images()
    sources, _ = scan_sources(list_images(paths))
    frame = (sources[0].height, sources[0].width)
    field_path = lens_field((rows, cols), args.psf, frame, "dslr-kit").save(work / "cam.npz")
    field = PSFField.load(field_path)
    camera = CameraProfile.bundled("canon-eos-5d-mark-ii")
    config = SimulateConfig(patch_size=args.patch, patches_per_image=args.samples, rows_per_file=args.samples)
    settings = shard_settings(config)
    image = load_source(sources[0])

    _blur_once(image, field, args.patch, "warm-up")  # allocator and first-call overheads
    results = bench_blur_vs_pipeline(image, field, camera, settings, args.samples, args.patch)
    cameras, _ = resolve_cameras([field_path], None)
    one_source = plan_shards(work / "serial", sources[:1], cameras, config)
    # First shard of a process pays imports (cv2, pandas via pyarrow): not part of the throughput.
    warm = SimulateConfig(**{**config.__dict__, "patches_per_image": 1, "rows_per_file": 1})
    bench_shards(plan_shards(work / "warm-serial", sources[:1], cameras, warm), args.patch, None)
    results["shards_in_process"] = bench_shards(one_source, args.patch, None)
    if not args.no_ray:
        from degtrans.cluster.session import ensure_ray

        ensure_ray()
        two = SimulateConfig(**{**config.__dict__, "rows_per_file": max(1, args.samples // 2)})
        specs = {name: plan_shards(work / name, sources[:1], cameras, two) for name in ("warm", "r1", "r2")}
        bench_shards(specs["warm"][:2], args.patch, 2)  # start both workers (torch import) before timing
        results["ray_1_worker"] = bench_shards(specs["r1"], args.patch, 1)
        results["ray_2_workers"] = bench_shards(specs["r2"], args.patch, 2)

    ratios = {
        "pipeline_cost_over_blur": results["blur"]["pairs_per_s"] / results["pipeline"]["pairs_per_s"],
        "shards_cost_over_blur": results["blur"]["pairs_per_s"] / results["shards_in_process"]["pairs_per_s"],
    }
    if "ray_2_workers" in results:
        one, two_workers = results["ray_1_worker"], results["ray_2_workers"]
        ratios["scaling_2_over_1"] = two_workers["pairs_per_s"] / one["pairs_per_s"]
    print(f"{'measurement':<20} {'pairs/s':>9} {'MPix/s':>8} {'seconds':>8}")
    for name, r in results.items():
        print(f"{name:<20} {r['pairs_per_s']:>9.2f} {r['mpix_per_s']:>8.3f} {r['seconds']:>8.2f}")
    for name, value in ratios.items():
        print(f"{name:<28} {value:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "simulate.json"
    payload = {
        "args": vars(args),
        "config": to_dict(config),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "results": results,
        "ratios": ratios,
    }
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
