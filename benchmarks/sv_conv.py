"""Spatially variant PSF convolution: our CPU path (and Triton on CUDA) against baselines, same process.

Default problem (issue 3): one 1024x1024 RGB image, an 8x8 field of 31x31 PSFs, reflect padding,
float32. Forward and forward+backward (gradients in the image and in the PSFs) are timed for

* ``cpu``        our support-restricted product convolution (``backend="cpu"``, method by cost model),
* ``cpu_direct`` / ``cpu_fft``  the same with the method forced (checks the cost model),
* ``batched_fft`` the batched product convolution (``backend="fft"``, what ``"auto"`` runs on a GPU),
* ``reference``  one full-frame ``F.conv2d`` per tile (the specification),
* ``conv_floor`` / ``fft_floor``  one shared kernel by ``F.conv2d`` / by real FFT: the floor for any
  spatially variant method,
* ``deepinv``    ``deepinv.physics.SpaceVaryingBlur`` (product convolution, direct and FFT) in a
  subprocess of ``--deepinv-python`` (or ``$DEGTRANS_DEEPINV_PYTHON``): deepinv cannot be installed
  beside our torch pin, so it lives in its own venv; skipped when neither is given,
* ``triton``     on a CUDA device only, beside the reference and our CPU path run on the same device,
  with the achieved fraction of the device's memory bandwidth (measured by a device-to-device copy in
  the same run, and of the datasheet peak where the device is in ``PEAKS``) and of its FP32 rate.

Accuracy is the largest absolute difference from the reference output (PSFs sum to 1, image in [0, 1]).
Prints a table of milliseconds and ratios and writes ``benchmarks/results/sv_conv.json``
(``sv_conv_<size>.json`` for other sizes).

    .venv/bin/python benchmarks/sv_conv.py [--size 1024] [--grid 8] [--psf 31] [--repeats 3]
        [--deepinv-python PATH/TO/deepinv-venv/bin/python] [--gpu-only]

See benchmarks/README.md for the recorded results and how to make the deepinv venv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from degtrans.kernels import sv_conv2d
from degtrans.kernels.spectral import fast_fft_len
from degtrans.kernels.sv_conv.cpu import sv_conv2d_cpu
from degtrans.kernels.weights import tile_weights_1d

RESULTS = Path(__file__).resolve().parent / "results"

# Datasheet memory bandwidth (bytes/s) and dense FP32 non-tensor-core rate (FLOP/s), by device-name
# substring (first match wins): the denominators of the "fraction of peak" figures.
PEAKS = {
    "H200": (4.8e12, 67e12),
    "H100 PCIe": (2.0e12, 51e12),
    "H100": (3.35e12, 67e12),
    "A100-SXM4-80GB": (2.04e12, 19.5e12),
    "A100": (1.56e12, 19.5e12),
    "L40S": (0.864e12, 91.6e12),
    "L4": (0.3e12, 30.3e12),
    "A10G": (0.6e12, 31.2e12),
}

_DEEPINV_SCRIPT = r"""
import json, sys, time
import numpy as np, torch
from deepinv.physics import SpaceVaryingBlur

work = sys.argv[1]
repeats = int(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]))
slow_repeats = int(sys.argv[4])
slow_backward = sys.argv[5] == "1"
x = torch.from_numpy(np.load(work + "/x.npy"))
psfs = torch.from_numpy(np.load(work + "/psfs.npy"))  # (rows, cols, C, k, k)
wy = torch.from_numpy(np.load(work + "/wy.npy"))  # (rows, H)
wx = torch.from_numpy(np.load(work + "/wx.npy"))  # (cols, W)
rows, cols, channels, k, _ = psfs.shape
# deepinv's multipliers are full-frame maps, one per PSF: (1, 1, K, H, W); filters (1, C, K, k, k).
multipliers = (wy[:, None, :, None] * wx[None, :, None, :]).reshape(1, 1, rows * cols, *x.shape[-2:])
filters = psfs.reshape(rows * cols, channels, k, k).permute(1, 0, 2, 3).unsqueeze(0).contiguous()

def timed(fn, repeats):
    if repeats > 1:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return times

result = {"version": __import__("deepinv").__version__, "torch": torch.__version__}
for use_fft in (False, True):
    physics = SpaceVaryingBlur(filters=filters, multipliers=multipliers, padding="reflect", use_fft=use_fft)
    out = physics(x)
    np.save(work + f"/out_{int(use_fft)}.npy", out.numpy())

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        fi = filters.clone().requires_grad_(True)
        physics.A(xi, filters=fi).backward(torch.ones_like(x))

    n = repeats if use_fft else slow_repeats
    result["fft" if use_fft else "direct"] = {
        "forward": timed(lambda: physics(x), n),
        "forward_backward": timed(fwd_bwd, n) if (use_fft or slow_backward) else None,
    }
print(json.dumps(result))
"""


def _timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> list[float]:
    """Wall times of ``repeats`` calls after one warm-up call (none for the slow, single-repeat baselines)."""
    if repeats > 1:
        fn()
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def _fwd_bwd(op: Callable, x: torch.Tensor, psfs: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        xi = x.detach().clone().requires_grad_(True)
        pi = psfs.detach().clone().requires_grad_(True)
        op(xi, pi).backward(torch.ones_like(x))

    return run


def _fft_floor(x: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """One shared kernel by real FFT, reflect padding: the cheapest possible blur of this image."""
    k = psf.shape[-1]
    x_pad = F.pad(x, (k // 2,) * 4, mode="reflect")
    size = (fast_fft_len(x_pad.shape[-2]), fast_fft_len(x_pad.shape[-1]))
    full = torch.fft.irfft2(torch.fft.rfft2(x_pad, s=size) * torch.fft.rfft2(psf, s=size), s=size)
    return full[..., k - 1 : k - 1 + x.shape[-2], k - 1 : k - 1 + x.shape[-1]]


def _conv_floor(x: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """One shared kernel by depthwise ``F.conv2d``, reflect padding."""
    k = psf.shape[-1]
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="reflect"), psf.flip(-1, -2).unsqueeze(1), groups=x.shape[1])


def _run_deepinv(python: str, x, psfs, repeats: int, slow: tuple[int, bool], reference) -> dict | None:
    """deepinv timings (s) and accuracy against our reference, or None when its python is missing."""
    slow_repeats, slow_backward = slow
    if not python:
        return None
    if not Path(python).exists():
        raise SystemExit(f"--deepinv-python: {python} does not exist")
    height, width = x.shape[-2:]
    rows, cols = psfs.shape[:2]
    with tempfile.TemporaryDirectory() as work:
        np.save(f"{work}/x.npy", x.numpy())
        np.save(f"{work}/psfs.npy", psfs.numpy())
        np.save(f"{work}/wy.npy", tile_weights_1d(torch.arange(height), rows, height).numpy())
        np.save(f"{work}/wx.npy", tile_weights_1d(torch.arange(width), cols, width).numpy())
        done = subprocess.run(
            [
                python,
                "-c",
                _DEEPINV_SCRIPT,
                work,
                str(repeats),
                str(torch.get_num_threads()),
                str(slow_repeats),
                str(int(slow_backward)),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(f"deepinv: failed ({done.stderr.strip().splitlines()[-1:]})")
            return None
        result = json.loads(done.stdout.strip().splitlines()[-1])
        for flag, name in ((0, "direct"), (1, "fft")):
            out = torch.from_numpy(np.load(f"{work}/out_{flag}.npy"))
            result[name]["max_abs_error"] = float((out - reference).abs().max())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="image height and width (default 1024)")
    parser.add_argument("--grid", type=int, default=8, help="field is grid x grid tiles (default 8)")
    parser.add_argument("--psf", type=int, default=31, help="PSF size k, odd (default 31)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (default 3)")
    parser.add_argument(
        "--reference-repeats", type=int, default=1, help="repeats of the slow ones: reference, direct methods"
    )
    parser.add_argument(
        "--deepinv-python",
        default=os.environ.get("DEGTRANS_DEEPINV_PYTHON"),
        help="python of a separate venv with deepinv installed (default: $DEGTRANS_DEEPINV_PYTHON; "
        "without either the deepinv rows are skipped)",
    )
    parser.add_argument(
        "--gpu-only",
        action="store_true",
        help="time only the CUDA rows (Triton, reference, CPU path on the device): for make gpu-check",
    )
    parser.add_argument(
        "--slow-backward",
        action="store_true",
        help="also time forward+backward of the slow ones (minutes at 1024x1024 on 2 cores)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args()
    if args.psf % 2 == 0:
        parser.error(f"--psf must be odd, got {args.psf}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu_only and not torch.cuda.is_available():
        parser.error("--gpu-only needs a CUDA device")

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, args.size, args.size, generator=g)
    psfs = torch.rand(args.grid, args.grid, 3, args.psf, args.psf, generator=g)
    psfs = psfs / psfs.sum((-1, -2), keepdim=True)
    no_sync = lambda: None  # noqa: E731

    def ref_op(a, b):
        return sv_conv2d(a, b, backend="reference")

    # The full-frame reference takes a while on a CPU: computed only when the CPU rows are timed.
    reference = None if args.gpu_only else ref_op(x, psfs)
    # (op, repeats, slow): the backward of a slow one is timed only with --slow-backward.
    ops: dict[str, tuple[Callable, int, bool]] = {
        "cpu": (lambda a, b: sv_conv2d(a, b, backend="cpu"), args.repeats, False),
        "cpu_direct": (lambda a, b: sv_conv2d_cpu(a, b, method="direct"), args.reference_repeats, True),
        "cpu_fft": (lambda a, b: sv_conv2d_cpu(a, b, method="fft"), args.repeats, False),
        "batched_fft": (lambda a, b: sv_conv2d(a, b, backend="fft"), args.repeats, False),
        "reference": (ref_op, args.reference_repeats, True),
        "conv_floor": (lambda a, b: _conv_floor(a, b[0, 0]), args.repeats, False),
        "fft_floor": (lambda a, b: _fft_floor(a, b[0, 0]), args.repeats, False),
    }
    rows = {}
    for name, (op, repeats, is_slow) in ({} if args.gpu_only else ops).items():
        fwd = _timed(lambda op=op: op(x, psfs), repeats, no_sync)
        timed_bwd = args.slow_backward or not is_slow
        both = _timed(_fwd_bwd(op, x, psfs), repeats, no_sync) if timed_bwd else None
        error = float((op(x, psfs) - reference).abs().max()) if "floor" not in name else None
        rows[name] = {"forward_s": fwd, "forward_backward_s": both, "max_abs_error": error}
        print(f"  measured {name}", flush=True)

    slow = (args.reference_repeats, args.slow_backward)
    deepinv = None
    if not args.gpu_only:
        deepinv = _run_deepinv(args.deepinv_python, x, psfs, args.repeats, slow, reference)
    if deepinv is None:
        print("deepinv: not run (give --deepinv-python)")
    else:
        for mode in ("direct", "fft"):
            rows[f"deepinv_{mode}"] = {
                "forward_s": deepinv[mode]["forward"],
                "forward_backward_s": deepinv[mode]["forward_backward"],
                "max_abs_error": deepinv[mode]["max_abs_error"],
            }

    gpu = _gpu_rows(x, psfs, args.repeats) if torch.cuda.is_available() else None
    if rows:
        _print_table(rows, "CPU", torch.get_num_threads())
    summary = _ratios(rows, "cpu") if rows else {}
    for key, value in summary.items():
        print(f"  {key}: {value:.2f}")
    if gpu is not None:
        _print_table(gpu["rows"], torch.cuda.get_device_name(), None)
        for key, value in gpu["achieved"].items():
            print(f"  {key}: {value:.3g}")

    record = {
        "problem": {
            "size": args.size,
            "channels": 3,
            "grid": args.grid,
            "psf": args.psf,
            "padding": "reflect",
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "deepinv": None if deepinv is None else deepinv["version"],
        },
        "cpu": rows,
        "cpu_summary": summary,
        "gpu": gpu,
    }
    out = args.output or RESULTS / ("sv_conv.json" if args.size == 1024 else f"sv_conv_{args.size}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


def _best(row: dict, key: str) -> float | None:
    return None if row[key] is None else min(row[key])


def _ratios(rows: dict, ours: str) -> dict[str, float]:
    """Speed of ``ours`` against each baseline (>1: ours is faster) and against the FFT floor (cost ratio)."""
    summary = {}
    for key in ("forward_s", "forward_backward_s"):
        mine = _best(rows[ours], key)
        for other in rows:
            theirs = _best(rows[other], key)
            if other != ours and theirs is not None:
                summary[f"{key[:-2]}: {other} / {ours}"] = theirs / mine
    return summary


def _print_table(rows: dict, device: str, threads: int | None) -> None:
    head = f"{device}" + (f" ({threads} torch threads)" if threads else "")
    print(f"\n{head}\n{'method':<16}{'forward ms':>12}{'fwd+bwd ms':>12}{'max |err|':>12}")
    for name, row in rows.items():
        err = row["max_abs_error"]
        both = _best(row, "forward_backward_s")
        both_ms = "-" if both is None else f"{1e3 * both:.1f}"
        print(
            f"{name:<16}{1e3 * _best(row, 'forward_s'):>12.1f}{both_ms:>12}"
            f"{'-' if err is None else f'{err:.1e}':>12}"
        )


def _gpu_rows(x: torch.Tensor, psfs: torch.Tensor, repeats: int) -> dict:
    """Triton vs reference (and deepinv-free floors) on the GPU, with achieved bandwidth and FP32 rate."""
    xg, pg = x.cuda(), psfs.cuda()
    sync = torch.cuda.synchronize
    ops = {
        "auto": lambda a, b: sv_conv2d(a, b),
        "fft": lambda a, b: sv_conv2d(a, b, backend="fft"),
        "triton": lambda a, b: sv_conv2d(a, b, backend="triton"),
        "reference": lambda a, b: sv_conv2d(a, b, backend="reference"),
        "cpu_path_on_gpu": lambda a, b: sv_conv2d(a, b, backend="cpu"),
        "fft_floor": lambda a, b: _fft_floor(a, b[0, 0]),
    }
    reference = ops["reference"](xg, pg)
    rows = {}
    for name, op in ops.items():
        rows[name] = {
            "forward_s": _timed(lambda op=op: op(xg, pg), repeats, sync),
            "forward_backward_s": _timed(_fwd_bwd(op, xg, pg), repeats, sync),
            "max_abs_error": None if "floor" in name else float((op(xg, pg) - reference).abs().max()),
        }
    batch, channels, height, width = x.shape
    k = psfs.shape[-1]
    pixels = batch * channels * height * width
    # Direct method, per output pixel and tap: 1 multiply-add for the image and 4 for the bilinear PSF.
    flops = pixels * k * k * 2 * 5
    # Compulsory traffic: read the padded image once, write the output once (PSFs and tables are tiny).
    traffic = 4 * (batch * channels * (height + k - 1) * (width + k - 1) + pixels)
    seconds = _best(rows["triton"], "forward_s")
    name = torch.cuda.get_device_name()
    achieved = {
        "triton forward GFLOP/s": flops / seconds / 1e9,
        "triton forward GB/s (compulsory traffic)": traffic / seconds / 1e9,
        "fraction of copy bandwidth": traffic / seconds / _copy_bandwidth(),
        "forward: reference / triton": _best(rows["reference"], "forward_s") / seconds,
        "forward: cpu path on device / triton": _best(rows["cpu_path_on_gpu"], "forward_s") / seconds,
    }
    peak = next((value for key, value in PEAKS.items() if key in name), None)
    if peak is not None:
        achieved["fraction of datasheet bandwidth"] = traffic / seconds / peak[0]
        achieved["fraction of datasheet FP32 rate"] = flops / seconds / peak[1]
    return {"rows": rows, "device": name, "achieved": achieved}


def _copy_bandwidth(megabytes: int = 1024, repeats: int = 5) -> float:
    """Bytes/s of a device-to-device copy (read + write): the bandwidth a streaming kernel can reach."""
    src = torch.empty(megabytes * 2**20 // 4, device="cuda")
    dst = torch.empty_like(src)
    seconds = min(_timed(lambda: dst.copy_(src), repeats, torch.cuda.synchronize))
    return 2 * src.numel() * 4 / seconds


if __name__ == "__main__":
    main()
