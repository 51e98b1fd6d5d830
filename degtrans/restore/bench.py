"""What the restoration benchmarks share (``benchmarks/restore.py``, ``benchmarks/transfer.py``): the
photographs they train on and hold out, the frames cut from them, the budget recipes, and a training
run of a fixed number of optimizer steps.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from degtrans.config import ConfigError, TrainConfig, replace_checked
from degtrans.io import read_image, write_image
from degtrans.restore.checkpoint import save_checkpoint
from degtrans.restore.data import PairReader
from degtrans.restore.loop import make_optimizer, train_epoch
from degtrans.restore.models import build_model
from degtrans.restore.recipe import WeightEMA, make_scheduler
from degtrans.simulate.sources import bundled_images

FRAME = (256, 384)
# scikit-image sample images whose scenes differ from the bundled (held-out) photographs.
TRAIN_SOURCES = (
    "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg", "ihc.png", "retina.jpg",
    "brick.png", "camera.png", "grass.png", "gravel.png", "moon.png", "cell.png", "coins.png",
)  # fmt: skip
RECIPES = {
    # The CPU budget of issue 12: width 16 at 96², batch 8.
    "cpu": {
        "patch": 96,
        "batch": 8,
        "width": 16,
        "offset_channels": 16,
        "wiener_features": 12,
        # Deep Wiener's half-quadratic-splitting stages, held-out dB at 2,000 steps: 1 stage 25.72;
        # 2 stages 26.10 / 25.90 (seeds 0 / 1); 3 stages 26.23 / 25.93, better on both seeds by a
        # little, for ~20 % more time per step (benchmarks/README.md).
        "wiener_stages": 3,
        "lr": 1e-3,
        "warmup": 100,
        "ema": 0.995,
        # FOV-KPN's small CPU variant: a deformable block at the coarsest decoder level only (the
        # full-resolution one costs a third of a step).
        "decoder_deform": 1,
    },
    # The reference's sizes (FOV-KPN paper): width 32, 32 offset channels, patch 128, batch 16.
    "paper": {
        "patch": 128,
        "batch": 16,
        "width": 32,
        "offset_channels": 32,
        "wiener_features": 24,
        "wiener_stages": 1,  # the reference (Dong et al.) has none
        "lr": 1e-4,
        "warmup": 0,
        "ema": 0.0,
        "decoder_deform": 3,
    },
}
NETWORK_LABELS = {"fovkpn": "fovkpn", "wiener": "deep-wiener"}


def training_photographs() -> list[Path]:
    """The photographs training frames are cut from: scikit-image's ``TRAIN_SOURCES``."""
    import skimage

    return [Path(skimage.__file__).parent / "data" / name for name in TRAIN_SOURCES]


def held_out_photographs() -> list[Path]:
    """The photographs restored as whole held-out frames: the bundled ones (never trained on)."""
    return bundled_images()


def training_frames(
    folder: Path, overlap: float = 0.0, sources: Sequence[Path] | None = None, frame: tuple[int, int] = FRAME
) -> list[Path]:
    """Cut every training source into ``frame``-sized frames overlapping by ``overlap`` (a fraction of
    the frame), written as PNGs in ``folder``. Overlapping frames put the same content at other
    sensor positions, under other PSFs. ``sources``: image files (default: :func:`training_photographs`)."""
    paths = []
    for name in sources if sources is not None else training_photographs():
        image = read_image(name)
        height, width = image.shape[:2]
        if height < frame[0] or width < frame[1]:  # small or portrait sources: rotate or skip
            image = np.ascontiguousarray(np.rot90(image))
            height, width = image.shape[:2]
            if height < frame[0] or width < frame[1]:
                continue
        step_y, step_x = (max(1, round(size * (1.0 - overlap))) for size in frame)
        for i, y in enumerate(range(0, height - frame[0] + 1, step_y)):
            for j, x in enumerate(range(0, width - frame[1] + 1, step_x)):
                crop = image[y : y + frame[0], x : x + frame[1]]
                index = f"{i}{j}" if overlap == 0 else f"{i}_{j}"  # the recorded runs' names when 0
                paths.append(write_image(Path(folder) / f"{Path(name).stem}-{index}.png", crop))
    return paths


def recipe_configs(
    recipe: dict, models: Sequence[str], amp: bool, overrides: Sequence[str] = ()
) -> dict[str, TrainConfig]:
    """``{model: TrainConfig}`` of a ``RECIPES`` entry for each network, then ``overrides``
    (``KEY=VALUE`` of ``train.`` keys, typed; a ``ConfigError`` names a bad one)."""
    configs = {
        name: TrainConfig(
            model=name,
            width=recipe["width"],
            offset_channels=recipe["offset_channels"],
            wiener_features=recipe["wiener_features"],
            wiener_stages=recipe["wiener_stages"],
            batch_size=recipe["batch"],
            learning_rate=recipe["lr"],
            warmup_steps=recipe["warmup"],
            lr_schedule="cosine",
            ema_decay=recipe["ema"],
            decoder_deform=recipe["decoder_deform"],
            amp=amp,
        )  # fmt: skip
        for name in models
    }
    if bad := [item for item in overrides if "=" not in item]:
        raise ConfigError(f"--set {bad[0]!r}: expected KEY=VALUE (a train. key)")
    if overrides:
        changes = {k.strip(): v.strip() for k, v in (item.split("=", 1) for item in overrides)}
        configs = {name: replace_checked(config, changes, "--set") for name, config in configs.items()}
    return configs


def train_for(
    config: TrainConfig,
    reader: PairReader,
    steps: int,
    path: Path,
    device: str,
    every: int = 0,
    score: Callable[[Path], dict] | None = None,
) -> dict:
    """Train ``config.model`` for ``steps`` optimizer steps with the recipe (warmup, cosine decay over
    the ``steps``, weight EMA); returns the checkpoint (the EMA weights when kept), its speed and,
    when ``every`` > 0, ``score(checkpoint)`` after every ``every`` steps (the training clock stops
    meanwhile)."""
    model = build_model(config).to(device)
    optimizer = make_optimizer(model, config)
    # One "epoch" of ``steps`` steps sizes the schedule: the budget is in steps, not dataset passes.
    scheduler = make_scheduler(optimizer, dataclasses.replace(config, epochs=1), steps)
    ema = WeightEMA(model, config.ema_decay) if config.ema_decay > 0 else None
    if reader.steps_per_epoch(config.batch_size, "all", drop_last=True) == 0:
        raise ValueError("benchmark dataset has no training batches")

    def stream() -> Iterator[dict]:  # epoch after epoch, so that a pause to score resumes mid-epoch
        for epoch in itertools.count():
            yield from reader.batches("all", config.batch_size, seed=config.seed, epoch=epoch, drop_last=True)

    batches = stream()
    seconds, done, curve = 0.0, 0, []
    while done < steps:
        stop = min(steps, done + every) if every > 0 else steps
        start = time.perf_counter()
        stats = train_epoch(model, itertools.islice(batches, stop - done), optimizer, scheduler=scheduler,
                            grad_clip=config.grad_clip, amp=config.amp, ema=ema)  # fmt: skip
        done += stats["steps"]
        seconds += time.perf_counter() - start
        kept = ema.module if ema is not None else model
        checkpoint = save_checkpoint(path, kept, optimizer, None, 0, config)
        if score is not None and every > 0:
            curve.append({"step": done, **score(checkpoint)})
            print(f"  {config.model} step {done}: {curve[-1]}", flush=True)
    return {"checkpoint": str(checkpoint), "seconds": seconds, "curve": curve,
            "patches_per_s": steps * config.batch_size / seconds}  # fmt: skip
