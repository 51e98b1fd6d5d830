"""Pretrain the bundled deep Wiener network (``degtrans.restore.pretrain``, which describes the recipe).

    .venv/bin/python benchmarks/pretrain.py                     # the CPU recipe (resumable: rerun to go on)
    .venv/bin/python benchmarks/pretrain.py --export degtrans/data/models/deep-wiener.pt
    PYTHONPATH=$PWD python3 benchmarks/pretrain.py --device cuda --recipe gpu --work $OUT/work \\
        --photos PHOTOS --time-limit 420 --export $OUT/deep-wiener.pt   # one device call

``--recipe cpu`` / ``gpu`` is the ``pretrain-cpu`` / ``pretrain-gpu`` row of ``config.PRESETS``.
Everything lives in ``--work``; a rerun of the same command resumes where the last one stopped, on the
same batches (``--time-limit`` stops between steps, after a checkpoint, and still exports). ``--export``
writes the weight average in float16 with its config and provenance: the file ``degtrans restore
--field`` and the demo load. Ray is not used (the device image has none).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from degtrans.errors import DegtransError
from degtrans.restore.pretrain import Catalogue, Schedule, pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=["cpu", "gpu"], default="cpu", help="the preset pretrain-RECIPE")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "degtrans" / "pretrain",
                        help="working folder (lenses, frames, data, run): rerun to resume")  # fmt: skip
    parser.add_argument(
        "--photos", type=Path, default=None, help="photograph set (make-photos; default: its default folder)"
    )
    parser.add_argument("--no-photos", dest="photos_frames", action="store_false",
                        help="dead leaves only (where the photograph set is not at hand)")  # fmt: skip
    parser.add_argument("--frames", type=Path, default=None,
                        help="training frames cut beforehand (WORK/frames of another run)")  # fmt: skip
    parser.add_argument("--scales", default="1,0.5,fit",
                        help="scales the photographs are cut at (benchmarks/restore.py's)")  # fmt: skip
    parser.add_argument("--flips", action=argparse.BooleanOptionalAction, default=True,
                        help="also the mirrored photographs (mirrored before simulation)")  # fmt: skip
    parser.add_argument("--lenses", type=int, default=128, help="random lenses in the catalogue")
    parser.add_argument("--lens-seed", type=int, default=0, help="seed of the lens family")
    parser.add_argument("--grid", type=int, nargs=2, default=(4, 6), help="PSF tiles per lens field")
    parser.add_argument("--psf-size", type=int, default=31, help="k")
    parser.add_argument("--dead-leaves", type=int, default=64, help="dead-leaves frames added")
    parser.add_argument("--patches-per-image", type=int, default=0, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps (default: the preset's)")
    parser.add_argument(
        "--side-info-dropout",
        type=float,
        default=0.5,
        help="probability that a batch is trained without its ISP draw and noise level",
    )
    parser.add_argument("--save-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--snapshot-every", type=int, default=500, help="keep the EMA weights every N steps")
    parser.add_argument("--prepare-only", action="store_true", help="write the lenses, frames and data only")
    parser.add_argument("--time-limit", type=float, default=0.0,
                        help="stop training after this many seconds (0: none), still exporting")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 0)) or None)
    parser.add_argument("--workers", type=int, default=1, help="processes synthesising the dataset")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--export", type=Path, default=None, help="write the bundled weights (fp16) here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    catalogue = Catalogue(
        lenses=args.lenses, lens_seed=args.lens_seed, grid=tuple(args.grid), psf_size=args.psf_size,
        dead_leaves=args.dead_leaves, photos=args.photos, use_photos=args.photos_frames, frames=args.frames,
        scales=tuple(x.strip() for x in args.scales.split(",") if x.strip()), flips=args.flips,
        patches_per_image=args.patches_per_image, seed=args.seed,
    )  # fmt: skip
    schedule = Schedule(steps=args.steps, side_info_dropout=args.side_info_dropout,
                        save_every=args.save_every,
                        snapshot_every=args.snapshot_every, time_limit=args.time_limit)  # fmt: skip
    try:
        exported = pretrain(args.work, f"pretrain-{args.recipe}", catalogue, schedule, device=args.device,
                            workers=args.workers, export=args.export, prepare_only=args.prepare_only,
                            command="benchmarks/pretrain.py " + " ".join(sys.argv[1:]))  # fmt: skip
    except (DegtransError, FloatingPointError) as error:
        raise SystemExit(str(error)) from error
    if exported is not None:
        print(f"wrote {exported}")


if __name__ == "__main__":
    main()
