"""``sv_conv2d`` against the floors of issue 19, on one device, every ratio measured in the same run.

* **Frames**: for 3000x4000 and 4000x6000 RGB float32 images and fields of 5x7 tiles with k = 31, 5x7 with
  k = 63 and 8x12 with k = 31: ``sv_conv2d`` (``backend="auto"``) forward and forward+backward (gradients
  in the image and the PSFs) against the single-kernel FFT convolution of the same image (the floor, its
  forward and forward+backward). Target: both ratios <= 4.
* **Triton and the cost model**: at 3000x4000, 5x7, both backends' forward at k = 31 and k = 7 and which
  one ``"auto"`` picked; the output's largest error against the float32 reference (TF32 off) at k = 31.
* **Patches**: 256 patches of 128x128 at random sensor offsets of 3000x4000 frames from 8 cameras in one
  call, against a loop of per-patch calls (its best backend). Target: >= 20x.

Times are medians of ``--repeats`` runs after two warm-up runs (CUDA events on a GPU). Prints a table
and writes ``benchmarks/results/sv_conv_gpu.json``. Without CUDA, ``--device cpu`` with small
``--frames``/``--patches`` runs the same code as a check (``tests/test_gpu_check.py`` does).

    python benchmarks/sv_conv_gpu.py [--device cuda] [--repeats 10] [--frames 3000x4000,4000x6000]
        [--patches 256] [--patch 128] [--cameras 8] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from degtrans.atomic import write_atomic
from degtrans.kernels import sv_conv2d
from degtrans.kernels.spectral import fast_fft_len
from degtrans.kernels.sv_conv import choose_backend
from degtrans.kernels.sv_conv.placement import make_placement

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"frame": 4.0, "patches": 20.0}


def fft_floor(x: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """One shared kernel by real FFT, reflect padding: the cheapest possible blur of this image."""
    k = psf.shape[-1]
    x_pad = torch.nn.functional.pad(x, (k // 2,) * 4, mode="reflect")
    size = (fast_fft_len(x_pad.shape[-2]), fast_fft_len(x_pad.shape[-1]))
    full = torch.fft.irfft2(torch.fft.rfft2(x_pad, s=size) * torch.fft.rfft2(psf, s=size), s=size)
    return full[..., k - 1 : k - 1 + x.shape[-2], k - 1 : k - 1 + x.shape[-1]]


class Timer:
    """Median seconds of ``repeats`` runs after two warm-ups (cuFFT plans, allocator, autotuning)."""

    def __init__(self, device: torch.device, repeats: int) -> None:
        self.device, self.repeats = device, repeats

    def __call__(self, fn: Callable[[], object], repeats: int | None = None) -> float:
        for _ in range(2):
            fn()
        times = []
        for _ in range(repeats or self.repeats):
            if self.device.type == "cuda":
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop) / 1e3)
            else:
                began = time.perf_counter()
                fn()
                times.append(time.perf_counter() - began)
        return statistics.median(times)


def _backends(device: torch.device) -> tuple[str, str]:
    """The batched FFT and the direct backend of this device (Triton on a GPU, the CPU path otherwise)."""
    return ("fft", "triton") if device.type == "cuda" else ("fft", "cpu")


def _fwd_bwd(op: Callable, x: torch.Tensor, psfs: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        xi = x.detach().requires_grad_(True)
        pi = psfs.detach().requires_grad_(True)
        out = op(xi, pi)
        torch.autograd.grad(out, (xi, pi), torch.ones_like(out))

    return run


def _field(grid: tuple[int, int], k: int, device: torch.device, cameras: int = 0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (cameras, *grid, 3, k, k) if cameras else (*grid, 3, k, k)
    psfs = torch.rand(shape, generator=g)
    return (psfs / psfs.sum((-1, -2), keepdim=True)).to(device)


def _ours(x: torch.Tensor, psfs: torch.Tensor) -> torch.Tensor:
    return sv_conv2d(x, psfs)


def _floor(x: torch.Tensor, psfs: torch.Tensor) -> torch.Tensor:
    return fft_floor(x, psfs[0, 0])


def frame_cases(frames, fields, timer: Timer, device: torch.device) -> dict:
    """Forward and forward+backward of ``sv_conv2d`` against the FFT floor, per frame and field."""
    rows = {}
    for height, width in frames:
        x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1)).to(device)
        for grid, k in fields:
            psfs = _field(grid, k, device)
            geometry = make_placement("bench", tuple(x.shape), (0, 0), None, None, 1)
            row = {
                "backend": choose_backend(x, psfs[None], geometry, "reflect"),
                "forward_s": timer(lambda x=x, psfs=psfs: _ours(x, psfs)),
                "floor_forward_s": timer(lambda x=x, psfs=psfs: _floor(x, psfs)),
                "forward_backward_s": timer(_fwd_bwd(_ours, x, psfs)),
                "floor_forward_backward_s": timer(_fwd_bwd(_floor, x, psfs)),
            }
            row["forward_over_floor"] = row["forward_s"] / row["floor_forward_s"]
            row["forward_backward_over_floor"] = row["forward_backward_s"] / row["floor_forward_backward_s"]
            rows[f"{height}x{width} {grid[0]}x{grid[1]} k={k}"] = row
            ratios = f"{row['forward_over_floor']:.2f}x / {row['forward_backward_over_floor']:.2f}x"
            print(f"  {height}x{width} {grid} k={k}: {ratios} the floor ({row['backend']})", flush=True)
            del psfs
    return rows


def backend_check(frame, sizes, timer: Timer, device: torch.device) -> dict:
    """Triton against the batched FFT for PSF ``sizes`` (5x7 field), ``auto``'s pick, and the error."""
    height, width = frame
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(2)).to(device)
    out = {}
    for k in sizes:
        psfs = _field((5, 7), k, device)
        geometry = make_placement("bench", tuple(x.shape), (0, 0), None, None, 1)
        times = {b: timer(lambda b=b, psfs=psfs: sv_conv2d(x, psfs, backend=b)) for b in _backends(device)}
        picked = choose_backend(x, psfs[None], geometry, "reflect")
        out[f"k={k}"] = {
            "seconds": times,
            "auto": picked,
            "fastest": min(times, key=times.get),
            "auto_over_fastest": times[picked] / min(times.values()),
        }
        if k == sizes[0]:
            torch.backends.cudnn.allow_tf32 = False  # the reference in true float32
            reference = sv_conv2d(x, psfs, backend="reference")
            got = sv_conv2d(x, psfs)
            scale = float(reference.abs().max())
            out[f"k={k}"]["max_rel_error_vs_reference"] = float((got - reference).abs().max()) / scale
        print(f"  backends at k={k}: {times}, auto -> {picked}", flush=True)
    return out


def patch_case(count: int, patch: int, cameras: int, frame, timer: Timer, device: torch.device) -> dict:
    """One call on ``count`` patches from ``cameras`` fields at random offsets against a loop of calls."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(count, 3, patch, patch, generator=g).to(device)
    offsets = torch.stack(
        [torch.randint(0, frame[0] - patch + 1, (count,), generator=g),
         torch.randint(0, frame[1] - patch + 1, (count,), generator=g)], 1
    )  # fmt: skip
    index = torch.randint(0, cameras, (count,), generator=g)
    fields = _field((5, 7), 31, device, cameras)
    per = [(tuple(offsets[i].tolist()), int(index[i])) for i in range(count)]

    def batched() -> torch.Tensor:
        return sv_conv2d(x, fields, offset=offsets, frame_size=frame, field_index=index)

    def loop(backend: str) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            outs = [sv_conv2d(x[i : i + 1], fields[f], offset=o, frame_size=frame, backend=backend)
                    for i, (o, f) in enumerate(per)]  # fmt: skip
            return torch.cat(outs)

        return run

    # A loop of hundreds of calls is long and steady: fewer repeats.
    loops = {b: timer(loop(b), max(1, timer.repeats // 5)) for b in ("auto", *_backends(device))}
    seconds = timer(batched)
    best = min(loops, key=loops.get)
    error = float((batched() - loop(best)()).abs().max())
    row = {
        "patches": count,
        "patch": patch,
        "cameras": cameras,
        "batched_s": seconds,
        "batched_forward_backward_s": timer(
            _fwd_bwd(
                lambda a, b: sv_conv2d(a, b, offset=offsets, frame_size=frame, field_index=index), x, fields
            )
        ),  # fmt: skip
        "loop_s": loops,
        "loop_best": best,
        "loop_over_batched": loops[best] / seconds,
        "max_abs_diff_vs_loop": error,
    }
    print(f"  {count} patches of {patch}^2: {row['loop_over_batched']:.1f}x a loop of calls ({best})")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (median)")
    parser.add_argument("--frames", default="3000x4000,4000x6000", help="frame sizes HxW, comma-separated")
    parser.add_argument(
        "--fields", default="5x7:31,5x7:63,8x12:31", help="fields ROWSxCOLS:K of the frame cases"
    )
    parser.add_argument("--backend-psfs", default="31,7", help="PSF sizes of the Triton/FFT check")
    parser.add_argument("--patches", type=int, default=256, help="patches in the batched call")
    parser.add_argument("--patch", type=int, default=128, help="patch side")
    parser.add_argument("--cameras", type=int, default=8, help="fields the patches draw from")
    parser.add_argument("--output", type=Path, default=RESULTS / "sv_conv_gpu.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(
            "no CUDA device: give --device cpu (with small --frames and --patches) to check the script"
        )
    frames = [tuple(int(v) for v in f.split("x")) for f in args.frames.split(",")]
    timer = Timer(device, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"sv_conv2d on {name}", flush=True)
    record: dict = {"device": name, "torch": torch.__version__, "repeats": args.repeats}
    fields = []
    for spec in args.fields.split(","):
        grid, k = spec.split(":")
        fields.append((tuple(int(v) for v in grid.split("x")), int(k)))
    record["frames"] = frame_cases(frames, fields, timer, device)
    sizes = [int(k) for k in args.backend_psfs.split(",")]
    record["backends"] = backend_check(frames[0], sizes, timer, device)
    record["patches"] = patch_case(args.patches, args.patch, args.cameras, frames[0], timer, device)
    worst = {
        "forward": max(r["forward_over_floor"] for r in record["frames"].values()),
        "forward_backward": max(r["forward_backward_over_floor"] for r in record["frames"].values()),
    }
    record["targets"] = {
        "frame forward / FFT floor (worst case)": [worst["forward"], "<=", TARGETS["frame"]],
        "frame fwd+bwd / FFT floor fwd+bwd (worst case)": [worst["forward_backward"], "<=", TARGETS["frame"]],
        "patch loop / one batched call": [record["patches"]["loop_over_batched"], ">=", TARGETS["patches"]],
    }
    for key, (value, op, target) in record["targets"].items():
        print(f"{key}: {value:.2f} (target {op} {target:g})")
    write_atomic(args.output, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
