"""What the restoration benchmarks share (``benchmarks/restore.py``, ``benchmarks/transfer.py``): the
frames cut from the training photographs and the held-out ones, the configs of a preset
(``config.PRESETS``: ``bench-cpu``, ``bench-gpu``, ``bench-reference``), the pairs in memory and a
training run of a fixed number of optimizer steps (or seconds).
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from degtrans.config import ConfigError, TrainConfig, preset_config, replace_checked
from degtrans.io import read_image, write_image
from degtrans.restore.checkpoint import save_checkpoint
from degtrans.restore.data import PairReader, batch_columns, rows_to_batch
from degtrans.restore.loop import Budget, Progress, fit, make_optimizer
from degtrans.restore.models import build_model
from degtrans.restore.recipe import WeightEMA, lr_factor
from degtrans.simulate.photoset import cover_crop, downscale, photo_paths
from degtrans.simulate.sources import bundled_images
from degtrans.simulate.writer import write_shard

FRAME = (256, 384)
LABELS = {"fovkpn": "fovkpn", "wiener": "deep-wiener"}


def preset_configs(
    preset: str, models: Sequence[str], amp: bool, overrides: Sequence[str] = ()
) -> dict[str, TrainConfig]:
    """``{model: TrainConfig}`` of ``config.PRESETS[preset]`` for each network, then ``overrides``
    (``KEY=VALUE`` of ``train.`` keys, typed; a ``ConfigError`` names a bad one)."""
    train = preset_config(preset).train
    configs = {name: dataclasses.replace(train, model=name, amp=amp) for name in models}
    if bad := [item for item in overrides if "=" not in item]:
        raise ConfigError(f"--set {bad[0]!r}: expected KEY=VALUE (a train. key)")
    if overrides:
        changes = {k.strip(): v.strip() for k, v in (item.split("=", 1) for item in overrides)}
        configs = {name: replace_checked(config, changes, "--set") for name, config in configs.items()}
    return configs


def cut_frames(image: np.ndarray, overlap: float = 0.0) -> Iterator[tuple[str, np.ndarray]]:
    """FRAME-sized frames of ``image (H, W, 3)``, overlapping by ``overlap`` (a fraction of FRAME);
    a portrait image is turned to landscape first. Yields ``(row_col, frame)``."""
    if image.shape[0] > image.shape[1]:
        image = np.ascontiguousarray(np.rot90(image))
    height, width = image.shape[:2]
    step_y, step_x = (max(1, round(size * (1.0 - overlap))) for size in FRAME)
    for i, y in enumerate(range(0, height - FRAME[0] + 1, step_y)):
        for j, x in enumerate(range(0, width - FRAME[1] + 1, step_x)):
            yield f"{i}_{j}", image[y : y + FRAME[0], x : x + FRAME[1]]


def source_frames(
    image: np.ndarray, scales: Sequence[str], overlap: float
) -> Iterator[tuple[str, np.ndarray]]:
    """Frames of one training photograph at each of ``scales``: a factor (``1``, ``0.5``: the
    photograph area-averaged to that size, then cut) or ``fit`` (its whole scene as one frame)."""
    for scale in scales:
        if scale == "fit":
            yield "fit", cover_crop(image, FRAME)
            continue
        factor = float(scale)
        size = (round(image.shape[0] * factor), round(image.shape[1] * factor))
        scaled = image if factor == 1.0 else downscale(image, size)
        for index, frame in cut_frames(scaled, overlap):
            yield f"s{scale}-{index}", frame


def training_frames(
    folder: Path, sources: Sequence[Path], scales: Sequence[str], overlap: float = 0.0, flips: bool = True
) -> list[Path]:
    """Every training source cut into frames (:func:`source_frames`), and with ``flips`` the same of
    its mirror image (the scene mirrored before simulation: other content under each PSF), as PNGs."""
    paths = []
    for source in sources:
        image = read_image(source)
        versions = [("", image)] + ([("-m", np.ascontiguousarray(image[:, ::-1]))] if flips else [])
        for suffix, version in versions:
            if min(version.shape[:2]) < FRAME[0] or max(version.shape[:2]) < FRAME[1]:
                continue
            for tag, frame in source_frames(version, scales, overlap):
                paths.append(write_image(folder / f"{source.stem}{suffix}-{tag}.png", frame))
    return paths


def held_out_images(photos: Path | None) -> list[tuple[str, np.ndarray]]:
    """The held-out frames: the bundled photographs (FRAME-sized) and, with ``photos``, the whole scene
    of every photograph of the set's ``heldout`` split."""
    images = [(p.stem, read_image(p)) for p in bundled_images()]
    if photos is not None:
        images += [(p.stem, cover_crop(read_image(p), FRAME)) for p in photo_paths(photos, "heldout")]
    return images


class InMemoryPairs:
    """Every pair of a dataset in memory, each epoch in a seeded permutation (uniform mixing: the
    shards hold consecutive patches of one photograph, which a reader's shuffle buffer mixes poorly).

    On the CPU the rows stay encoded (uint16 pixels, about 110 kB a 96² pair) and a batch is decoded
    when it is drawn; with ``decoded`` every tensor of every pair is decoded once onto ``device`` and a
    batch is an index into them (for a GPU that would wait on the decoding)."""

    def __init__(self, reader: PairReader, device: torch.device | str = "cpu", decoded: bool = False) -> None:
        tables = [
            pq.read_table(path, columns=batch_columns(pq.read_schema(path).names)) for path in reader.shards
        ]
        self.table = pa.concat_tables(tables).combine_chunks()
        self.fields = reader.fields
        self.device = torch.device(device)
        self.tensors: dict[str, torch.Tensor] | None = None
        if decoded:
            parts = [
                self._decode(np.arange(i, min(i + 256, len(self))), self.device)
                for i in range(0, len(self), 256)
            ]
            self.tensors = {
                k: torch.cat([p[k] for p in parts])
                for k, v in parts[0].items()
                if isinstance(v, torch.Tensor)
            }

    def __len__(self) -> int:
        return self.table.num_rows

    def _decode(self, rows: np.ndarray, device: torch.device) -> dict[str, Any]:
        taken = self.table.take(pa.array(rows))
        return rows_to_batch({n: taken.column(n) for n in taken.column_names}, self.fields, device)

    def stream(self, batch_size: int, seed: int) -> Iterator[dict[str, Any]]:
        """Batches of ``batch_size`` forever; epoch ``e``'s order depends only on ``(seed, e)``."""
        for epoch in itertools.count():
            order = np.random.default_rng([seed, epoch]).permutation(len(self))
            for start in range(0, len(order) - batch_size + 1, batch_size):
                rows = order[start : start + batch_size]
                if self.tensors is None:
                    yield self._decode(rows, torch.device("cpu"))
                else:
                    index = torch.as_tensor(rows, device=self.device)
                    yield {k: v.index_select(0, index) for k, v in self.tensors.items()}


def train_for(
    config: TrainConfig,
    pairs: InMemoryPairs,
    steps: int,
    path: Path,
    device: str,
    every: int = 0,
    score: Callable[[Path], dict] | None = None,
    time_budget: float = 0.0,
) -> dict:
    """Train ``config.model`` for ``steps`` optimizer steps (``loop.fit``) with the preset's schedule
    (warmup, cosine decay over the run, weight EMA); returns the checkpoint (the EMA weights when
    kept), its speed, the last learning rate and, when ``every`` > 0, ``score(checkpoint)`` after
    every ``every`` steps (the training clock stops meanwhile).

    With ``time_budget`` > 0 (seconds of training) the run stops at ``steps`` or when the budget is
    spent, whichever comes first: the cosine's length is set from the speed measured during warmup
    (twice: after 20 steps and when warmup ends), so the schedule still decays to its end.
    """
    if len(pairs) < config.batch_size:
        raise ValueError(f"benchmark dataset has {len(pairs)} pairs, fewer than a batch")
    model = build_model(config).to(device)
    optimizer = make_optimizer(model, config.optim)
    total = [steps]  # the cosine's length; fixed before warmup ends when a time budget sets it
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config, total[0], total[0])
    )
    ema = WeightEMA(model, config.optim.ema_decay) if config.optim.ema_decay > 0 else None
    stream = pairs.stream(config.batch_size, config.seed)
    calibrate_at = sorted({20, max(20, config.optim.warmup_steps)}) if time_budget > 0 else []
    curve: list[dict] = []

    def next_stop(done: int) -> int:
        stop = min([total[0], *(c for c in calibrate_at if c > done)])
        if every > 0:
            stop = min(stop, (done // every + 1) * every)
        if time_budget > 0:  # a line of progress every tenth of the run (the device's log)
            tenth = max(1, total[0] // 10)
            stop = min(stop, (done // tenth + 1) * tenth)
        return stop

    def end_chunk(progress: Progress, stats: dict[str, float]) -> Budget | None:
        done, seconds = progress.step, progress.seconds
        if time_budget > 0:
            print(f"  {config.model} step {done}/{total[0]}: loss {stats['loss']:.4f}, {seconds:.0f} s",
                  flush=True)  # fmt: skip
        if done in calibrate_at:
            total[0] = max(done + 1, min(steps, int(time_budget / (seconds / done))))
            print(
                f"  {config.model}: {seconds / done * 1e3:.0f} ms/step after {done} steps: "
                f"{total[0]} steps in {time_budget:.0f} s",
                flush=True,
            )
        if (every > 0 and done % every == 0) or done >= total[0]:
            kept = ema.module if ema is not None else model
            save_checkpoint(path, kept, optimizer, None, 0, config)
            if score is not None and every > 0:
                curve.append({"step": done, **score(path)})
                print(f"  {config.model} step {done}: {curve[-1]['psnr']:.2f} dB", flush=True)
        return Budget(steps=total[0])

    done = fit(model, lambda epoch: stream, optimizer, config, Budget(steps=steps), scheduler=scheduler,
               ema=ema, every=next_stop, on_chunk=end_chunk)  # fmt: skip
    return {
        "checkpoint": str(path),
        "seconds": done.seconds,
        "curve": curve,
        "steps": done.step,
        "patches_per_s": done.step * config.batch_size / done.seconds,
        "lr": optimizer.param_groups[0]["lr"],
    }


def pool_map(workers: int):
    """``map_shards`` for ``build_dataset`` writing ``workers`` shards at once in spawned processes
    (a fork after torch has run can hang), each with one torch thread; in this process for 1."""

    def run(specs):
        if workers <= 1:
            yield from map(write_shard, specs)
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads,
                                 initargs=(1,)) as pool:  # fmt: skip
            yield from pool.map(write_shard, specs)

    return run
