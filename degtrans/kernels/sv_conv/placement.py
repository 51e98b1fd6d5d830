"""Where each image of a batch sits: sensor offset, frame size and field (camera), shared or per sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

Pair = tuple[int, int]
# A pair shared by the batch, or one pair per sample: a (B, 2) integer tensor or a sequence of pairs.
PairArg = Pair | Sequence[Sequence[int]] | torch.Tensor


@dataclass(frozen=True)
class PatchPlacement:
    """Sensor placement of P images (P = 1 when the whole batch shares it, else P = B); CPU int64.

    Attributes:
        offsets: (P, 2) ``(y0, x0)`` of each image's top-left pixel on the sensor.
        frames: (P, 2) ``(H, W)`` of each image's sensor frame.
        fields: (P,) index of each image's PSF field.
    """

    offsets: torch.Tensor
    frames: torch.Tensor
    fields: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.offsets.shape[0])

    def groups(self) -> list[tuple[torch.Tensor, Pair, Pair, int]]:
        """``(sample indices, offset, frame, field)`` of each distinct geometry, in first-seen order."""
        rows = torch.cat([self.offsets, self.frames, self.fields[:, None]], dim=1).tolist()
        members: dict[tuple[int, ...], list[int]] = {}
        for i, row in enumerate(rows):
            members.setdefault(tuple(row), []).append(i)
        return [
            (torch.tensor(idx), (key[0], key[1]), (key[2], key[3]), key[4]) for key, idx in members.items()
        ]


def _pairs(op: str, name: str, value: PairArg, batch: int) -> torch.Tensor:
    """(1, 2) or (B, 2) int64 CPU tensor from a pair or per-sample pairs."""
    tensor = torch.as_tensor(value).detach().cpu() if not torch.is_tensor(value) else value.detach().cpu()
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{op}: {name} must hold integers, got {tensor.dtype}")
    if tensor.dim() == 1 and tensor.numel() == 2:
        return tensor.long().view(1, 2)
    if tensor.dim() == 2 and tensor.shape == (batch, 2):
        return tensor.long()
    raise ValueError(
        f"{op}: {name} must be a pair or ({batch}, 2) per sample, got shape {tuple(tensor.shape)}"
    )


def make_placement(
    op: str,
    shape: tuple[int, int, int, int],
    offset: PairArg,
    frame_size: PairArg | None,
    field_index: torch.Tensor | Sequence[int] | int | None,
    n_fields: int,
) -> PatchPlacement:
    """Validate and normalise the geometry arguments of a batch of ``shape`` (B, C, H, W)."""
    batch, _, height, width = shape
    offsets = _pairs(op, "offset", offset, batch)
    frames = _pairs(op, "frame_size", frame_size if frame_size is not None else (height, width), batch)
    if field_index is None:
        if n_fields != 1:
            raise ValueError(f"{op}: field_psfs holds {n_fields} fields: give field_index, one per sample")
        fields = torch.zeros(1, dtype=torch.long)
    else:
        fields = torch.as_tensor(field_index).detach().cpu().reshape(-1)
        if fields.is_floating_point() or fields.dtype == torch.bool:
            raise ValueError(f"{op}: field_index must hold integers, got {fields.dtype}")
        if fields.numel() not in (1, batch):
            raise ValueError(f"{op}: field_index must have 1 or {batch} entries, got {fields.numel()}")
        fields = fields.long()
        if bool(((fields < 0) | (fields >= n_fields)).any()):
            raise ValueError(f"{op}: field_index must lie in [0, {n_fields}), got {fields.tolist()}")
    inside = (offsets >= 0).all(1) & (offsets + torch.tensor([height, width]) <= frames).all(1)
    if not bool(inside.all()):
        bad = int((~inside).nonzero()[0, 0])
        raise ValueError(
            f"{op}: patch of size {(height, width)} at offset {tuple(offsets[bad].tolist())} "
            f"lies outside frame_size {tuple(frames[min(bad, frames.shape[0] - 1)].tolist())}"
        )
    count = max(offsets.shape[0], frames.shape[0], fields.shape[0])
    offsets, frames, fields = offsets.expand(count, 2), frames.expand(count, 2), fields.expand(count)
    # One geometry for the whole batch is the common case: keep it as P = 1.
    if (
        count > 1
        and bool((offsets == offsets[:1]).all() and (frames == frames[:1]).all())
        and bool((fields == fields[0]).all())
    ):
        count = 1
    return PatchPlacement(
        offsets[:count].contiguous(), frames[:count].contiguous(), fields[:count].contiguous()
    )
