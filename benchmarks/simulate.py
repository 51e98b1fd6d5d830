"""Synthesis throughput: cost per pair against the number of cameras, Ray workers, and GPU vs CPU.

All numbers come from this run, on the bundled photographs, with PSF fields of a 6x8 grid of 31x31
PSFs (smooth Gaussian fields of varying width: the blur costs the same as a lens field's, and 100 of
them are made in a second).

* ``blur`` / ``pipeline``: the optics alone and the whole pair (unprocess, blur, CFA, noise, demosaic,
  process, uint16) on one patch, interleaved; ``pipeline / blur`` is the cost of everything but the
  optics (target <= 2).
* ``cameras_N``: whole shards written in this process from a catalogue of N cameras, each image x
  patch drawing its camera (``camera_choice = "draw"``): the same pairs for every N, so pairs/s must
  stay flat (target: 100 cameras within 15 % of 1), in wall time and in CPU time of this one-thread
  process (``pairs_per_cpu_s``: the cost of a pair, which other processes on a shared machine do not
  inflate). The first pass over the catalogue, which reads each field once into the worker's cache, is
  timed apart (``field_load_cpu_s_per_camera``): a one-off cost per worker, not per pair. Measurements
  are interleaved over ``--repeats`` rounds and the median kept, so load from other processes hits
  every N alike.
* ``ray_1_worker`` / ``ray_2_workers``: the same shards as Ray tasks (1 camera).
* ``gpu_path`` / ``cpu_path`` (with CUDA): the same shards written by the device path on the GPU (each row
  group developed in one pass, ``degtrans.simulate.batch``) and by the one-thread CPU path, their ratio
  (target >= 20) and the largest pixel difference between them in uint16 DN (target <= 1).

Prints a table and writes ``benchmarks/results/simulate.json``.

    .venv/bin/python benchmarks/simulate.py [--patch 64] [--patches-per-image 48] [--cameras 1,10,100]
        [--repeats 3] [--no-ray] [--gpu-check [--device cuda]] [--output PATH]

``--gpu-check`` (used by ``benchmarks/gpu_check.py``) measures only the device path against the CPU path;
``--device cpu`` runs the device path on CPU tensors (no GPU needed: checks the script and the equality).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from degtrans.atomic import write_atomic
from degtrans.config import SimulateConfig, to_dict
from degtrans.field import PSFField
from degtrans.kernels import sv_conv2d
from degtrans.simulate import writer
from degtrans.simulate.camera import CameraProfile
from degtrans.simulate.catalogue import fields_as_entries
from degtrans.simulate.degrade import PairSettings, context_window, sample_generator
from degtrans.simulate.plan import plan_shards, resolve_cameras
from degtrans.simulate.sample import simulate_sample
from degtrans.simulate.sources import bundled_images, list_images, load_source, scan_sources
from degtrans.simulate.writer import write_shard
from degtrans.testing.synthetic import gaussian_field

RESULTS = Path(__file__).resolve().parent / "results"
GRID, PSF = (6, 8), 31


def _rate(count: int, seconds: float, patch: int) -> dict[str, float]:
    return {
        "pairs_per_s": count / seconds,
        "mpix_per_s": count * patch * patch / seconds / 1e6,
        "seconds": seconds,
    }


def make_fields(folder: Path, count: int, frame: tuple[int, int]) -> list[Path]:
    """``count`` distinct fields (Gaussian PSFs widening towards the corners, a different width each)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        centre = 0.7 + 1.5 * i / max(1, count - 1)
        field = gaussian_field(GRID, PSF, frame, sigma_centre=centre, sigma_corner=centre + 1.2)
        paths.append(field.save(folder / f"cam{i:03d}.npz"))
    return paths


def _blur_once(image: np.ndarray, field: PSFField, patch: int, sample_id: str) -> None:
    """The optics alone: the PSF field on one patch plus its context, as the pipeline does it."""
    height, width = image.shape[:2]
    g = sample_generator(0, sample_id)
    y0 = int(torch.randint(0, height - patch + 1, (1,), generator=g))
    x0 = int(torch.randint(0, width - patch + 1, (1,), generator=g))
    top, bottom, left, right = context_window(y0, x0, (patch, patch), (height, width), field.kernel_size)
    crop = torch.from_numpy(np.ascontiguousarray(image[top:bottom, left:right])).permute(2, 0, 1)[None]
    sv_conv2d(crop, torch.from_numpy(field.psfs), offset=(top, left), frame_size=(height, width))


def bench_blur_vs_pipeline(image, field, settings, samples: int, patch: int) -> dict[str, dict]:
    """Blur alone and the whole pair, interleaved sample by sample; median times."""
    camera = CameraProfile.bundled("canon-eos-5d-mark-ii")
    times: dict[str, list[float]] = {"blur": [], "pipeline": []}
    for i in range(samples):
        sample_id = f"img/p{i:02d}"
        start = time.perf_counter()
        _blur_once(image, field, patch, sample_id)
        times["blur"].append(time.perf_counter() - start)
        start = time.perf_counter()
        simulate_sample(image, field, camera, sample_id, settings, "cam")
        times["pipeline"].append(time.perf_counter() - start)
    return {name: _rate(1, statistics.median(t), patch) for name, t in times.items()}


def write_all(specs, device: str = "cpu") -> float:
    """Seconds to write every shard in this process."""
    return write_all_timed(specs, device)[0]


def write_all_timed(specs, device: str = "cpu") -> tuple[float, float]:
    """Wall and CPU seconds (this process, all its threads) to write every shard in this process."""
    start, cpu = time.perf_counter(), time.process_time()
    for spec in specs:
        write_shard(spec, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu


def plans(work: Path, name: str, sources, fields: list[Path], config: SimulateConfig):
    return plan_shards(work / name, sources, resolve_cameras(fields_as_entries(fields)), config)


def bench_cameras(work, sources, frame, counts, config, repeats) -> tuple[dict, dict]:
    """Pairs/s of the same draw-mode pairs for each catalogue size (median of interleaved rounds), and
    the one-off CPU seconds per camera of the first pass that fills the field cache.

    Besides wall time, the CPU time of this (single-threaded) process is measured: on a machine shared
    with other work it is the cost of a pair that other processes do not inflate.
    """
    fields = make_fields(work / "fields", max(counts), frame)
    pairs = len(sources) * config.patches_per_image
    wall: dict[int, list[float]] = {n: [] for n in counts}
    cpu: dict[int, list[float]] = {n: [] for n in counts}
    first_cpu: dict[int, float] = {}
    for round_ in range(repeats + 1):
        for n in counts:
            specs = plans(work, f"c{n}-{round_}", sources, fields[:n], config)
            if round_ == 0:
                writer.load_field_cached.cache_clear()  # a fresh worker: reads its n fields once
                first_cpu[n] = write_all_timed(specs)[1]
                continue
            seconds, cpu_seconds = write_all_timed(specs)
            wall[n].append(seconds)
            cpu[n].append(cpu_seconds)
    results = {}
    for n in counts:
        rate = _rate(pairs, statistics.median(wall[n]), config.patch_size)
        rate["pairs_per_cpu_s"] = pairs / statistics.median(cpu[n])
        results[f"cameras_{n}"] = rate
    one_off = {f"cameras_{n}": (first_cpu[n] - statistics.median(cpu[n])) / n for n in counts}
    return results, one_off


def bench_ray(work, sources, fields, config, patch: int) -> dict[str, dict]:
    from degtrans.cluster.session import ensure_ray
    from degtrans.cluster.synthesize import ray_map

    ensure_ray()
    pairs = len(sources) * config.patches_per_image
    two = dataclasses.replace(config, rows_per_file=max(1, pairs // 8))
    for _ in ray_map(2)(plans(work, "ray-warm", sources, fields, two)[:2]):
        pass  # start both workers (imports) before timing
    out = {}
    for workers in (1, 2):
        specs = plans(work, f"ray-{workers}", sources, fields, two)
        start = time.perf_counter()
        for _ in ray_map(workers)(specs):
            pass
        out[f"ray_{workers}_worker{'s' if workers > 1 else ''}"] = _rate(
            pairs, time.perf_counter() - start, patch
        )
    return out


def _pixels(specs) -> np.ndarray:
    """Every clean and degraded uint16 value of the shards, in order."""
    values = []
    for spec in specs:
        table = pq.read_table(spec.path, columns=["clean", "degraded"])
        values += [table.column(name).combine_chunks().flatten().to_numpy() for name in ("clean", "degraded")]
    return np.concatenate(values)


def _write_batched(specs, device: str) -> float:
    """Seconds to write every shard by the device path on ``device``."""
    start = time.perf_counter()
    for spec in specs:
        write_shard(spec, device=device, batched=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_gpu(work, sources, fields, config, device: str = "cuda", repeats: int = 3) -> dict:
    """The same shards by the device path and by the one-thread CPU path: pairs/s of each (the device
    path's best of ``repeats``), their ratio and the largest difference in DN."""
    pairs = len(sources) * config.patches_per_image
    warm = dataclasses.replace(config, patches_per_image=4)
    _write_batched(plans(work, "gpu-warm", sources[:1], fields, warm), device)  # allocator, FFT plans
    runs = [plans(work, f"gpu-{r}", sources, fields, config) for r in range(repeats)]
    seconds = [_write_batched(specs, device) for specs in runs]
    cpu_specs = plans(work, "cpu", sources, fields, config)
    gpu = _rate(pairs, min(seconds), config.patch_size)
    cpu = _rate(pairs, write_all(cpu_specs, "cpu"), config.patch_size)
    diff = np.abs(_pixels(runs[0]).astype(np.int32) - _pixels(cpu_specs).astype(np.int32))
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else device,
        "gpu": gpu,
        "gpu_seconds": seconds,
        "cpu": cpu,
        "gpu_over_cpu": gpu["pairs_per_s"] / cpu["pairs_per_s"],
        "max_abs_diff_dn": int(diff.max()),
        "mean_abs_diff_dn": float(diff.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=64, help="patch side (default 64)")
    parser.add_argument(
        "--patches-per-image", type=int, default=48, help="pairs per bundled image (default 48)"
    )
    parser.add_argument("--cameras", default="1,10,100", help="catalogue sizes (default 1,10,100)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per catalogue size")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray 1 vs 2 workers measurement")
    parser.add_argument("--gpu-check", action="store_true", help="only the GPU path against the CPU path")
    parser.add_argument("--device", default="cuda", help="--gpu-check: device path on (default cuda)")
    parser.add_argument("--output", type=Path, default=RESULTS / "simulate.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one worker = one core, like a Ray task with num_cpus=1
    if args.gpu_check and args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--gpu-check needs a CUDA device (or --device cpu)")

    work = Path(tempfile.mkdtemp(prefix="degtrans-bench-"))
    sources, _ = scan_sources(list_images(bundled_images()))
    frame = (sources[0].height, sources[0].width)
    config = SimulateConfig(patch_size=args.patch, patches_per_image=args.patches_per_image,
                            rows_per_file=args.patches_per_image, camera_choice="draw")  # fmt: skip
    results: dict = {}
    extra: dict = {}
    if args.gpu_check:
        fields = make_fields(work / "gpu-fields", 10, frame)
        extra["gpu_vs_cpu"] = bench_gpu(work, sources, fields, config, args.device)
    else:
        counts = [int(n) for n in args.cameras.split(",")]
        one = make_fields(work / "one", 1, frame)
        image = load_source(sources[0])
        field = PSFField.load(one[0])
        _blur_once(image, field, args.patch, "warm-up")  # allocator and first-call overheads
        results |= bench_blur_vs_pipeline(image, field, PairSettings.of(config), 16, args.patch)
        write_all(plans(work, "warm", sources[:1], one, dataclasses.replace(config, patches_per_image=1)))
        scaling, one_off = bench_cameras(work, sources, frame, counts, config, args.repeats)
        results |= scaling
        extra["field_load_cpu_s_per_camera"] = one_off
        if not args.no_ray:
            results |= bench_ray(work, sources, one, config, args.patch)
        if torch.cuda.is_available():
            extra["gpu_vs_cpu"] = bench_gpu(
                work, sources, make_fields(work / "gpu-fields", 10, frame), config
            )

    ratios = {}
    if "pipeline" in results:
        ratios["pipeline_cost_over_blur"] = (
            results["blur"]["pairs_per_s"] / results["pipeline"]["pairs_per_s"]
        )
        for key in ("pairs_per_s", "pairs_per_cpu_s"):
            base = results[f"cameras_{counts[0]}"][key]
            for n in counts[1:]:
                ratios[f"cameras_{n}_over_{counts[0]} ({key})"] = results[f"cameras_{n}"][key] / base
    if "ray_2_workers" in results:
        ratios["ray_2_over_1"] = (
            results["ray_2_workers"]["pairs_per_s"] / results["ray_1_worker"]["pairs_per_s"]
        )
    print(f"{'measurement':<16} {'pairs/s':>9} {'MPix/s':>8} {'seconds':>8} {'pairs/CPU-s':>12}")
    for name, r in results.items():
        per_cpu = f"{r['pairs_per_cpu_s']:.2f}" if "pairs_per_cpu_s" in r else "-"
        rates = f"{r['pairs_per_s']:>9.2f} {r['mpix_per_s']:>8.3f} {r['seconds']:>8.3f}"
        print(f"{name:<16} {rates} {per_cpu:>12}")
    for name, value in ratios.items():
        print(f"{name:<44} {value:.3f}")
    for name, value in extra.get("field_load_cpu_s_per_camera", {}).items():
        print(f"first pass, field load CPU time per camera ({name}): {1e3 * value:.1f} ms")
    if "gpu_vs_cpu" in extra:
        g = extra["gpu_vs_cpu"]
        print(f"device path on {g['device']}: {g['gpu']['pairs_per_s']:.1f} pairs/s; one-thread CPU path "
              f"{g['cpu']['pairs_per_s']:.1f}; ratio {g['gpu_over_cpu']:.2f} (target >= 20); "
              f"max |diff| {g['max_abs_diff_dn']} DN (target <= 1)")  # fmt: skip
    payload = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "output"},
        "config": to_dict(config),
        "field": {"grid": list(GRID), "psf": PSF, "frame": list(frame)},
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "results": results,
        "ratios": ratios,
        **extra,
    }
    write_atomic(args.output, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
