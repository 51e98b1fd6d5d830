"""The device path of the synthesis: a whole row group through the camera chain in one pass.

The CPU makes each sample's draws exactly as the one-sample path does (``sample.draw_sample``: position,
parameters, then one standard normal per pixel of its context crop, all from the sample's own
generator). Each patch then gets a window of one size per batch, ``patch + 2 * (k // 2 + 2)`` a side (the
frame's size where the frame is smaller), shifted inwards at the frame border so that it holds the
one-sample path's context crop. The device runs :func:`degtrans.simulate.degrade.develop_pair` once on
the batch: per-sample sensor offsets, frame sizes, PSF fields (``sv_conv2d``'s batched backend), CFA
phases and noise. The patch and the context its pixels depend on are the one-sample path's, and both
windows meet the frame border at the same place, so the rows equal that path's up to the blur's rounding
(at most 1 DN of 65535); pixels of the window outside the context never reach the patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from degtrans.field import PSFField
from degtrans.simulate.camera import CameraProfile
from degtrans.simulate.cfa import cfa_masks_batch
from degtrans.simulate.degrade import DEMOSAIC_HALO, PairSettings, develop_pair, stack_params
from degtrans.simulate.noise import standard_noise
from degtrans.simulate.sample import EncodedPair, SampleDraws, draw_sample, sample_row


@dataclass(frozen=True)
class BatchItem:
    """One sample of a batch: its clean frame (H, W, 3) float32, PSF field, camera and names."""

    image: np.ndarray
    field: PSFField
    camera: CameraProfile
    sample_id: str
    camera_name: str


@dataclass(frozen=True)
class PendingRows:
    """A developed batch, possibly still running on the device: :meth:`rows` waits, copies and encodes."""

    items: tuple[BatchItem, ...]
    draws: tuple[SampleDraws, ...]
    settings: PairSettings
    parts: tuple[tuple[list[int], EncodedPair], ...]

    def rows(self) -> list[dict[str, Any]]:
        """The dataset rows, in the order of the items."""
        rows: list[dict[str, Any] | None] = [None] * len(self.items)
        for members, pair in self.parts:
            host = pair.to_host()
            for j, i in enumerate(members):
                item, draws = self.items[i], self.draws[i]
                frame = item.image.shape[:2]
                rows[i] = sample_row(
                    item.sample_id, item.camera_name, item.camera, draws, frame, self.settings, host, j
                )
        return rows


def batch_window(
    y0: int, x0: int, patch: int, frame: tuple[int, int], kernel_size: int
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a sample's window: ``patch`` plus the context on each side, moved
    inside the frame (and no larger than it)."""
    margin = kernel_size // 2 + DEMOSAIC_HALO
    height, width = min(patch + 2 * margin, frame[0]), min(patch + 2 * margin, frame[1])
    top = min(max(y0 - margin, 0), frame[0] - height)
    left = min(max(x0 - margin, 0), frame[1] - width)
    return top, left, height, width


class FieldCache:
    """PSF fields stacked on a device, reused across row groups (a field is identified by its array)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._stacks: dict[tuple[int, ...], torch.Tensor] = {}

    def stack(self, fields: Sequence[PSFField]) -> torch.Tensor:
        """(F, rows, cols, 3, k, k) float32 on the device."""
        key = tuple(id(f.psfs) for f in fields)
        if key not in self._stacks:
            if len(self._stacks) > 16:
                self._stacks.clear()
            psfs = torch.from_numpy(np.stack([np.asarray(f.psfs, np.float32) for f in fields]))
            self._stacks[key] = psfs.to(self.device)
        return self._stacks[key]


def simulate_batch(
    items: Sequence[BatchItem],
    settings: PairSettings,
    device: torch.device | str,
    fields: FieldCache | None = None,
) -> PendingRows:
    """Develop ``items`` on ``device`` (any torch device); rows equal ``sample.simulate_sample``'s.

    Samples whose windows and fields have the same shapes run as one batch (usually the whole group).
    """
    device = torch.device(device)
    fields = fields or FieldCache(device)
    draws = tuple(
        draw_sample(item.image.shape[:2], item.field.kernel_size, item.camera, item.sample_id, settings)
        for item in items
    )
    windows = [
        batch_window(d.y0, d.x0, settings.patch_size, item.image.shape[:2], item.field.kernel_size)
        for item, d in zip(items, draws, strict=True)
    ]
    batches: dict[tuple, list[int]] = {}
    for i, (item, window) in enumerate(zip(items, windows, strict=True)):
        batches.setdefault((window[2:], item.field.psfs.shape), []).append(i)
    parts = tuple(
        (members, _develop([items[i] for i in members], [draws[i] for i in members],
                           [windows[i] for i in members], settings, device, fields))
        for members in batches.values()
    )  # fmt: skip
    return PendingRows(tuple(items), draws, settings, parts)


def _develop(
    items: list[BatchItem],
    draws: list[SampleDraws],
    windows: list[tuple[int, int, int, int]],
    settings: PairSettings,
    device: torch.device,
    fields: FieldCache,
) -> EncodedPair:
    patch = settings.patch_size
    height, width = windows[0][2:]
    crops = np.stack(
        [item.image[t : t + h, x : x + w] for item, (t, x, h, w) in zip(items, windows, strict=True)]
    )
    clean = torch.from_numpy(crops).permute(0, 3, 1, 2)
    noise = None
    if settings.noise:
        # Each sample's noise is drawn over its one-sample context crop, as that path draws it, and put in
        # place inside the window (the rest of the window never reaches the patch).
        noise = torch.zeros(len(items), 1, height, width, dtype=clean.dtype)
        for b, (d, (top, left, _, _)) in enumerate(zip(draws, windows, strict=True)):
            y0, y1, x0, x1 = d.window
            draw = standard_noise((1, 1, y1 - y0, x1 - x0), d.generator, clean.dtype)[0]
            noise[b, :, y0 - top : y1 - top, x0 - left : x1 - left] = draw
    pinned = device.type == "cuda"
    clean = clean.pin_memory() if pinned else clean
    used = list(dict.fromkeys(id(item.field.psfs) for item in items))
    by_id = {id(item.field.psfs): item.field for item in items}
    psfs = fields.stack([by_id[u] for u in used])
    offsets = torch.tensor([w[:2] for w in windows])
    frames = torch.tensor([item.image.shape[:2] for item in items])
    patterns = [settings.pattern(item.camera) for item in items]
    masks = cfa_masks_batch(patterns, offsets.tolist(), height, width, device)
    crop_at = torch.tensor([(d.y0 - w[0], d.x0 - w[1]) for d, w in zip(draws, windows, strict=True)])
    pair = develop_pair(
        clean.to(device, non_blocking=pinned),
        psfs,
        masks,
        stack_params([d.params for d in draws]),
        None if noise is None else noise.to(device, non_blocking=pinned),
        offset=offsets,
        frame_size=frames,
        field_index=torch.tensor([used.index(id(item.field.psfs)) for item in items]),
        crop_at=crop_at,
        crop_size=(patch, patch),
        settings=settings,
    )
    # Quantised on the device in one pass for the batch: the rows then only slice the arrays.
    return EncodedPair.of(pair, [item.camera for item in items] if settings.store_raw else None)
