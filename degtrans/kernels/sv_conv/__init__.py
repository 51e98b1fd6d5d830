"""Spatially variant PSF convolution: dispatch between the reference, CPU path, Triton and batched FFTs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from degtrans.kernels._utils import check_choice
from degtrans.kernels.sv_conv.batched import cuda_choice, sv_conv2d_batched
from degtrans.kernels.sv_conv.cpu import sv_conv2d_cpu
from degtrans.kernels.sv_conv.placement import PairArg, PatchPlacement, make_placement
from degtrans.kernels.sv_conv.reference import sv_conv2d_reference

_PADDINGS = ("reflect", "zeros")
_BACKENDS = ("auto", "reference", "cpu", "triton", "fft")


def _validate(name: str, x: torch.Tensor, field_psfs: torch.Tensor, padding: str, backend: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name}: x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if not (x.is_floating_point() and field_psfs.is_floating_point()):
        raise ValueError(
            f"{name}: x and field_psfs must be floating point, got {x.dtype} and {field_psfs.dtype}"
        )
    if field_psfs.dim() not in (5, 6) or field_psfs.shape[-1] != field_psfs.shape[-2]:
        raise ValueError(
            f"{name}: field_psfs must be (rows, cols, C, k, k) or (F, rows, cols, C, k, k), "
            f"got shape {tuple(field_psfs.shape)}"
        )
    if field_psfs.shape[-1] % 2 == 0:
        raise ValueError(f"{name}: PSF size k must be odd, got {field_psfs.shape[-1]}")
    if field_psfs.shape[-3] != x.shape[1]:
        raise ValueError(f"{name}: field has {field_psfs.shape[-3]} channels but x has {x.shape[1]}")
    if field_psfs.device != x.device:
        raise ValueError(f"{name}: x is on {x.device} but field_psfs on {field_psfs.device}")
    check_choice(name, "padding", padding, _PADDINGS)
    check_choice(name, "backend", backend, _BACKENDS)


def sv_conv2d(
    x: torch.Tensor,
    field_psfs: torch.Tensor,
    *,
    offset: PairArg = (0, 0),
    frame_size: PairArg | None = None,
    field_index: torch.Tensor | Sequence[int] | None = None,
    padding: str = "reflect",
    backend: str = "auto",
) -> torch.Tensor:
    """Blur ``x`` with a spatially variant PSF field (scatter model).

    ``y(p) = sum_q x(q) h_q(p - q)``, ``h_q`` bilinearly interpolated between tile centres.

    Args:
        x: (B, C, H, W) image in linear intensities.
        field_psfs: (rows, cols, C, k, k) PSFs of the tile centres (``PSFField.psfs``), k odd; or
            (F, rows, cols, C, k, k), F fields of the same grid, each image picking one by ``field_index``.
        offset: (y0, x0) of the patch on the sensor, for patches cut from a larger frame; or (B, 2), one
            offset per image (a tensor or a sequence of pairs).
        frame_size: (H, W) of the sensor frame, or (B, 2) one per image; defaults to ``x``'s own size.
        field_index: (B,) field of each image in a stacked ``field_psfs`` (or one index for all);
            ``None`` with a single field.
        padding: ``"reflect"`` (mirror pixels use the PSF of their mirror) or ``"zeros"``.
        backend: ``"auto"``, ``"reference"``, ``"cpu"`` (the support-restricted product convolution, any
            device), ``"triton"`` (direct, PSFs interpolated on the fly) or ``"fft"`` (the batched
            product convolution, any device). ``"auto"``: on CUDA, ``"fft"`` or ``"triton"`` by a cost
            model (``"fft"`` unless k is small); on the CPU, ``"cpu"``; for images at different
            positions, frames or fields, ``"fft"`` on any device (the one batched backend: the others
            run once per distinct geometry).

    Returns:
        (B, C, H, W) blurred image, differentiable in ``x`` and ``field_psfs``; image ``b`` equals the
        call on ``x[b:b+1]`` with its own offset, frame size and field.
    """
    _validate("sv_conv2d", x, field_psfs, padding, backend)
    fields = field_psfs if field_psfs.dim() == 6 else field_psfs.unsqueeze(0)
    geometry = make_placement("sv_conv2d", tuple(x.shape), offset, frame_size, field_index, fields.shape[0])
    if backend == "auto":
        backend = choose_backend(x, fields, geometry, padding)
    if backend == "fft":
        return sv_conv2d_batched(x, fields, geometry, padding)
    if backend == "triton":
        # Imported here so that importing degtrans.kernels never imports triton.
        from degtrans.kernels.sv_conv.autograd import sv_conv2d_triton as run
    else:
        run = sv_conv2d_reference if backend == "reference" else sv_conv2d_cpu
    if geometry.count == 1:
        return run(
            x, fields[int(geometry.fields[0])], offset=tuple(geometry.offsets[0].tolist()),
            frame_size=tuple(geometry.frames[0].tolist()), padding=padding,
        )  # fmt: skip
    # One call per distinct geometry, put back in the batch's order.
    order, parts = [], []
    for members, offset_g, frame_g, field_g in geometry.groups():
        part = x.index_select(0, members.to(x.device))
        parts.append(run(part, fields[field_g], offset=offset_g, frame_size=frame_g, padding=padding))
        order.append(members)
    inverse = torch.argsort(torch.cat(order)).to(x.device)
    return torch.cat(parts).index_select(0, inverse)


def sv_conv2d_adjoint(
    y: torch.Tensor,
    field_psfs: torch.Tensor,
    *,
    offset: PairArg = (0, 0),
    frame_size: PairArg | None = None,
    field_index: torch.Tensor | Sequence[int] | None = None,
    padding: str = "reflect",
    backend: str = "auto",
) -> torch.Tensor:
    """Adjoint of :func:`sv_conv2d` in the image: ``<sv_conv2d(x), y> = <x, sv_conv2d_adjoint(y)>``.

    ``x(q) = sum_p y(p) h_q(p - q)``: ``y`` correlated with each source pixel's own PSF. The blur is
    linear in ``x`` for both paddings (a reflected pixel is a copy), so its adjoint is the
    vector-Jacobian product that :func:`sv_conv2d`'s backward already computes for the image gradient,
    taken here at ``x = 0`` (one forward and one backward of the chosen backend). With ``"reflect"`` it
    is the adjoint of the reflect-padded blur: what falls on the mirrored halo goes back to the pixels
    it mirrors.

    Args:
        y: (B, C, H, W) an image on the blurred side; the other arguments as for :func:`sv_conv2d`.

    Returns:
        (B, C, H, W) in ``y``'s dtype; differentiable in ``y`` and ``field_psfs`` except through the
        Triton backend (whose backward is not differentiable again).
    """
    _validate("sv_conv2d_adjoint", y, field_psfs, padding, backend)
    create_graph = torch.is_grad_enabled() and (y.requires_grad or field_psfs.requires_grad)
    psfs = field_psfs if create_graph else field_psfs.detach()
    with torch.enable_grad():
        x = torch.zeros_like(y, requires_grad=True)
        blurred = sv_conv2d(
            x, psfs, offset=offset, frame_size=frame_size, field_index=field_index, padding=padding,
            backend=backend,
        )  # fmt: skip
        (adjoint,) = torch.autograd.grad(blurred, x, y, create_graph=create_graph)
    return adjoint


def choose_backend(x: torch.Tensor, fields: torch.Tensor, geometry: PatchPlacement, padding: str) -> str:
    """The backend ``"auto"`` runs (see :func:`sv_conv2d`)."""
    if geometry.count > 1:
        return "fft"
    if not x.is_cuda:
        return "cpu"
    return cuda_choice(tuple(x.shape), tuple(fields.shape[1:3]), fields.shape[-1], geometry, padding)


class SVConv2d(nn.Module):
    """:func:`sv_conv2d` with the field held by the module (a buffer, or a parameter to learn it).

    Args:
        field_psfs: (rows, cols, C, k, k) PSFs of the tile centres, or (F, rows, cols, C, k, k) fields.
        frame_size: (H, W) of the sensor frame (or (B, 2)); ``None`` means each input is a whole frame.
        padding: ``"reflect"`` or ``"zeros"``.
        backend: see :func:`sv_conv2d`.
        learnable: register the PSFs as an ``nn.Parameter`` (calibration by gradient descent).
    """

    def __init__(
        self,
        field_psfs: torch.Tensor,
        *,
        frame_size: tuple[int, int] | None = None,
        padding: str = "reflect",
        backend: str = "auto",
        learnable: bool = False,
    ) -> None:
        super().__init__()
        psfs = torch.as_tensor(field_psfs).detach().clone()
        if learnable:
            self.psfs = nn.Parameter(psfs)
        else:
            self.register_buffer("psfs", psfs)
        self.frame_size = frame_size
        self.padding = padding
        self.backend = backend

    def forward(
        self,
        x: torch.Tensor,
        offset: PairArg = (0, 0),
        field_index: torch.Tensor | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Blur ``x: (B, C, H, W)`` whose top-left pixel sits at ``offset`` on the sensor (or (B, 2) offsets,
        and ``field_index`` when the module holds several fields)."""
        return sv_conv2d(
            x, self.psfs, offset=offset, frame_size=self.frame_size, field_index=field_index,
            padding=self.padding, backend=self.backend,
        )  # fmt: skip
