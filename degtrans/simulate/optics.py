"""Virtual cameras: PSF fields from a pupil-function (Fourier optics) model.

The wavefront error over the unit pupil ``(rho, theta)`` at normalised field height ``h`` (0 on
axis, 1 in the corner) is the Seidel sum
``W = W020 rho^2 + W040 rho^4 + W131 h rho^3 cos(theta) + (W222 cos^2(theta) + W220) h^2 rho^2``
(waves), with ``theta`` measured from the direction of the field point. Axial chromatic aberration
adds defocus per wavelength; lateral chromatic aberration is a tilt that grows with ``h``. The PSF
is ``|FFT(pupil * exp(2 pi i W))|^2``, sampled at ``pixel_pitch / s`` and integrated over pixels.
An aberration-free pupil gives the Airy pattern of its f-number.

Geometry vs PSF (the convention of ``degtrans.field``): a PSF's centroid is the mean wavefront
slope over the pupil. Coma (``W131 h rho^3 cos``, mean slope ``W131 h``) and distortion move the
image of a point; blur does not. ``lens_field`` therefore renders *centred* PSFs (the green channel's
coma tilt is taken out of every channel, so each channel keeps its offset from green: lateral colour)
and stores the displacement of the green centroid, plus the lens's radial distortion, as the field's
distortion map. Bilinear mixing of neighbouring centred PSFs then stays single-peaked.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from degtrans.errors import InputError
from degtrans.field import PSFField, normalise_psfs

MIN_PUPIL_SAMPLES = 96


@dataclass(frozen=True)
class LensSpec:
    """A lens + sensor. Aberrations in waves (at the green wavelength), at the corner where they vary.

    Attributes:
        f_number: working f-number N.
        pixel_pitch_um: sensor pixel pitch in micrometres.
        wavelengths_nm: centre wavelengths of the R, G, B channels.
        defocus: W020 everywhere (focus error).
        spherical: W040 everywhere.
        coma: W131 at the corner (linear in h).
        astigmatism: W222 at the corner (quadratic in h).
        field_curvature: W220 at the corner (quadratic in h).
        axial_ca: extra defocus of R (+) and B (-) relative to G, waves.
        lateral_ca_px: radial shift of R relative to G at the corner, pixels (B shifts the other way).
        distortion_px: radial distortion at the corner in pixels (Seidel ``W311``, cubic in h;
            negative: barrel). Stored in the field's distortion map, never inside the PSFs.
    """

    name: str = "custom"
    f_number: float = 2.0
    pixel_pitch_um: float = 1.4
    wavelengths_nm: tuple[float, float, float] = (610.0, 535.0, 465.0)
    defocus: float = 0.0
    spherical: float = 0.0
    coma: float = 0.0
    astigmatism: float = 0.0
    field_curvature: float = 0.0
    axial_ca: float = 0.0
    lateral_ca_px: float = 0.0
    distortion_px: float = 0.0

    def __post_init__(self) -> None:
        if self.f_number <= 0 or self.pixel_pitch_um <= 0:
            raise ValueError(f"lens {self.name!r}: f_number and pixel_pitch_um must be positive")
        if len(self.wavelengths_nm) != 3 or min(self.wavelengths_nm) <= 0:
            raise ValueError(f"lens {self.name!r}: wavelengths_nm must be 3 positive values")


# name: (f_number, pixel_pitch_um, defocus, spherical, coma, astigmatism, field_curvature, axial_ca,
#        lateral_ca_px, distortion_px)
_PRESET_PARAMETERS = {
    "ideal": (2.8, 1.4, 0, 0, 0, 0, 0, 0, 0, 0),
    "phone-wide": (1.8, 1.0, 0.1, 0.25, 0.9, 1.0, -0.6, 0.35, 0.8, 0),
    "phone-tele": (2.8, 1.0, 0, 0.15, 0.5, 0.6, -0.3, 0.2, 0.4, 0),
    "dslr-kit": (4.0, 4.3, 0, 0.5, 1.5, 1.8, -1.0, 0.6, 1.2, 0),
    "vintage": (2.0, 4.3, 0.3, 1.5, 2.0, 2.0, -1.5, 1.0, 1.5, 0),
    # The character of a classic three-element (Cooke triplet) design: on axis a defocused, spherically
    # aberrated disc (second-moment radius ~3.5-4.5 px), toward the corners astigmatic, comatic,
    # elongated/cross-shaped PSFs up to ~6 px (k = 31 holds them with their tails), lateral colour,
    # barrel distortion. Pixels of 1 um at f/4 sample it near Nyquist, so targets up to 0.45 cycles/px
    # see all but ~3 % of it (pixel L2 of the out-of-band part).
    "triplet": (4.0, 1.0, 0.2, 0.3, 0.7, 1.8, -0.9, 0.15, 1.0, -5.0),
    # A sharp lens whose centre is nearly diffraction-limited with a ring (f/2.8 on 1-um pixels: the
    # optics pass up to 0.67 cycles/px, past the sensor's Nyquist; spherical aberration balanced by
    # defocus leaves a 1-px core with a ring at ~3 px; second-moment radius 3.1 px on axis), and wide
    # comatic, astigmatic corners (6-7 px at the corner tiles of a 5x7 grid). Its sharp tiles are the
    # ones a fit on the wrong model of the target on the sensor gets wrong (docs/calibration.md).
    "sharp-centre": (2.8, 1.0, -1.0, 1.0, 3.5, 2.0, -1.0, 0.2, 0.8, -3.0),
}
_PRESET_FIELDS = ("f_number", "pixel_pitch_um", "defocus", "spherical", "coma", "astigmatism")
_PRESET_FIELDS += ("field_curvature", "axial_ca", "lateral_ca_px", "distortion_px")
PRESETS: dict[str, LensSpec] = {
    name: LensSpec(name, **{k: float(v) for k, v in zip(_PRESET_FIELDS, values, strict=True)})
    for name, values in _PRESET_PARAMETERS.items()
}


# The bundled camera profile each preset is paired with by default (small sensors with the compact).
PRESET_PROFILES = {
    "ideal": "canon-eos-5d-mark-ii",
    "phone-wide": "sony-rx100m4",
    "phone-tele": "sony-rx100m4",
    "dslr-kit": "nikon-d700",
    "vintage": "canon-eos-5d-mark-ii",
    "triplet": "nikon-d700",
    "sharp-centre": "sony-rx100m4",
}


def random_lens(seed: int, name: str | None = None) -> LensSpec:
    """A seedable random lens from the family spanned by the presets (same seed, same lens)."""
    rng = np.random.default_rng(seed)
    return LensSpec(
        name=name or f"random-{seed}",
        f_number=float(rng.uniform(1.6, 5.6)),
        pixel_pitch_um=float(rng.choice([0.8, 1.0, 1.4, 2.4, 4.3, 5.9])),
        defocus=float(rng.uniform(-0.3, 0.3)),
        spherical=float(rng.uniform(0.0, 1.0)),
        coma=float(rng.uniform(0.2, 1.8)),
        astigmatism=float(rng.uniform(0.2, 1.8)),
        field_curvature=float(rng.uniform(-1.2, 0.2)),
        axial_ca=float(rng.uniform(0.0, 0.8)),
        lateral_ca_px=float(rng.uniform(0.0, 1.5)),
    )


def wavefront(
    spec: LensSpec, rho: np.ndarray, theta: np.ndarray, height: float, channel: int, centred: bool = False
) -> np.ndarray:
    """Wavefront error in waves of ``channel`` at normalised field height ``height`` over the unit pupil.

    ``centred``: take out the tilt equal to green's mean coma slope, so that the green PSF is centred
    and the other channels keep their offset from green (see the module docstring).
    """
    defocus = spec.defocus + spec.axial_ca * (1 - channel)
    w = (defocus + (spec.astigmatism * np.cos(theta) ** 2 + spec.field_curvature) * height**2) * rho**2
    w = w + spec.spherical * rho**4 + spec.coma * height * rho**3 * np.cos(theta)
    # Lateral colour: a tilt of T waves moves the PSF by 2 T lambda N; R outward, B inward.
    shift_um = spec.lateral_ca_px * height * (1 - channel) * spec.pixel_pitch_um
    wavelength_um = spec.wavelengths_nm[channel] * 1e-3
    tilt = shift_um / (2 * wavelength_um * spec.f_number)
    if centred:
        # Coma's mean slope over the unit disc is W131 h (in this channel's waves); green's, in µm,
        # is the same for every channel once scaled by the wavelengths.
        tilt -= spec.coma * height * spec.wavelengths_nm[1] / spec.wavelengths_nm[channel]
    return w + tilt * rho * np.cos(theta)


def distortion_map(
    spec: LensSpec,
    image_size: tuple[int, int],
    tile_shifts: np.ndarray,
    nodes: tuple[int, int] = (17, 25),
) -> np.ndarray:
    """(ny, nx, 2) displacement (dy, dx) in pixels on the nodes of ``PSFField.distortion``
    (node ``(i, j)`` at sensor point ``(i H / (ny - 1), j W / (nx - 1))``): the analytic radial
    displacement plus ``tile_shifts`` (rows, cols, 2), bilinear between tile centres and clamped."""
    height_px, width_px = image_size
    half_diagonal = math.hypot(height_px / 2, width_px / 2)
    ys = np.linspace(0.0, height_px, nodes[0])
    xs = np.linspace(0.0, width_px, nodes[1])
    out = np.zeros((*nodes, 2), dtype=np.float64)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            dy, dx = y - height_px / 2, x - width_px / 2
            radius = math.hypot(dy, dx)
            if radius > 0:
                # The green image point moves outward by coma's centroid shift (2 N lambda W131 h) plus
                # the lens's cubic distortion.
                h = radius / half_diagonal
                coma_um = 2 * spec.f_number * spec.wavelengths_nm[1] * 1e-3 * spec.coma * h
                shift = coma_um / spec.pixel_pitch_um + spec.distortion_px * h**3
                out[i, j] = shift * dy / radius, shift * dx / radius
    rows, cols = tile_shifts.shape[:2]
    ty = np.clip(ys * rows / height_px - 0.5, 0, rows - 1)
    tx = np.clip(xs * cols / width_px - 0.5, 0, cols - 1)
    for axis in range(2):
        along_x = np.stack([np.interp(tx, np.arange(cols), row) for row in tile_shifts[..., axis]])
        out[..., axis] += np.stack([np.interp(ty, np.arange(rows), col) for col in along_x.T], axis=1)
    return out.astype(np.float32)


def oversampled_psf(
    spec: LensSpec,
    kernel_size: int,
    height: float,
    direction: float,
    channel: int,
    centred: bool = False,
    shift_px: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, int]:
    """PSF intensity sampled at ``pixel_pitch / s`` on ``(k s, k s)`` points, centred; returns ``(psf, s)``.

    Args:
        height: normalised field height in [0, 1].
        direction: angle (radians) of the field point from the optical axis, image coordinates (y down).
        centred: green's coma centroid shift taken out (``wavefront``).
        shift_px: an extra shift ``(dy, dx)`` of the PSF in pixels (a wavefront tilt).
    """
    # Odd samples per pixel s, so that the PSF intensity is sampled without aliasing at every wavelength:
    # the OTF cuts off at 1 / (lambda N), Nyquist needs a sample spacing <= lambda N / 2.
    s = max(3, math.ceil(2 * spec.pixel_pitch_um / (min(spec.wavelengths_nm) * 1e-3 * spec.f_number)))
    s = s if s % 2 == 1 else s + 1
    crop = kernel_size * s
    wavelength_um = spec.wavelengths_nm[channel] * 1e-3
    # PSF sample spacing lambda N D / n (pupil diameter D in samples, FFT size n) equals pitch / s.
    # Zero-padding the FFT beyond the kernel (odd n, crop afterwards) keeps the pupil disc finely
    # sampled (D >= MIN_PUPIL_SAMPLES) and the wrapped-around tails far from the kernel.
    scale = spec.pixel_pitch_um / (s * wavelength_um * spec.f_number)
    n = max(crop, math.ceil(MIN_PUPIL_SAMPLES / scale))
    n = n + 1 if n % 2 == 0 else n
    diameter = n * scale
    coords = (np.arange(n) - (n - 1) / 2) / (diameter / 2)
    v, u = np.meshgrid(coords, coords, indexing="ij")
    rho = np.hypot(u, v)
    # theta from the field direction: the meridional plane points toward the field point.
    theta = np.arctan2(v, u) - direction
    pupil = (rho <= 1.0).astype(np.float64)
    w = wavefront(spec, rho, theta, height, channel, centred)
    w = w + (shift_px[0] * v + shift_px[1] * u) * spec.pixel_pitch_um / (2 * wavelength_um * spec.f_number)
    field = pupil * np.exp(2j * np.pi * w)
    amplitude = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(field)))
    start = (n - crop) // 2
    psf = np.abs(amplitude[start : start + crop, start : start + crop]) ** 2
    return psf / psf.sum(), s


def pixel_psf(
    spec: LensSpec,
    kernel_size: int,
    height: float,
    direction: float,
    channel: int,
    centred: bool = False,
    shift_px: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """(k, k) PSF integrated over square pixels, summing to 1."""
    psf, s = oversampled_psf(spec, kernel_size, height, direction, channel, centred, shift_px)
    binned = psf.reshape(kernel_size, s, kernel_size, s).sum(axis=(1, 3))
    return binned / binned.sum()


def lens_field(
    grid: tuple[int, int] = (6, 8),
    psf_size: int = 31,
    image_size: tuple[int, int] = (512, 768),
    preset: str | LensSpec = "phone-wide",
    camera: str | None = None,
    profile: str | None = None,
    centred: bool = True,
) -> PSFField:
    """A physically plausible PSF field of a virtual lens.

    Args:
        grid: (rows, cols) of FOV tiles.
        psf_size: k, odd.
        image_size: (H, W) of the sensor frame in pixels.
        preset: a name in ``PRESETS``, ``"random-<seed>"``, or a ``LensSpec``.
        camera: camera name stored in the field's metadata (default: the preset's name).
        profile: camera profile (bundled name or TOML path) the simulation should pair with it.
        centred: centred PSFs plus a distortion map (coma's centroid shift and the lens's
            distortion); ``False``: the centroid shifts stay inside the PSFs and no map is stored.

    Returns:
        ``PSFField`` with per-channel PSFs (R, G, B), ``meta`` recording the lens.
    """
    spec = resolve_preset(preset)
    rows, cols = grid
    if psf_size % 2 == 0 or psf_size < 3:
        raise InputError(f"lens_field: psf_size (--psf-size) must be odd and >= 3, got {psf_size}")
    if rows < 1 or cols < 1:
        raise InputError(f"lens_field: grid (--grid) must be positive, got {grid}")
    height_px, width_px = image_size
    half_diagonal = math.hypot(height_px / 2, width_px / 2)
    psfs = np.zeros((rows, cols, 3, psf_size, psf_size), dtype=np.float64)
    # Window-centring shifts taken out of each tile's PSFs on top of the analytic coma tilt: they are
    # geometry too, so they join the map (interpolated between tile centres like the PSFs).
    extra = np.zeros((rows, cols, 2))
    for r in range(rows):
        for c in range(cols):
            dy = (r + 0.5) * height_px / rows - height_px / 2
            dx = (c + 0.5) * width_px / cols - width_px / 2
            h = math.hypot(dy, dx) / half_diagonal
            direction = math.atan2(dy, dx)
            tile = [pixel_psf(spec, psf_size, h, direction, ch, centred) for ch in range(3)]
            residual = -_centroid(tile[1])
            extra[r, c] = -residual
            if centred and np.abs(residual).max() > 0.005:
                # The analytic tilt centres the untruncated PSF; the k x k window's centroid differs by
                # the cut tails, so one more tilt centres green exactly where the field is defined.
                shift = (float(residual[0]), float(residual[1]))
                tile = [pixel_psf(spec, psf_size, h, direction, ch, centred, shift) for ch in range(3)]
            psfs[r, c] = tile
    meta = {
        "camera": camera or spec.name,
        "source": "degtrans.simulate.optics.lens_field",
        "lens": dataclasses.asdict(spec),
    }
    profile = profile or PRESET_PROFILES.get(spec.name)
    if profile:
        meta["profile"] = profile
    distortion = distortion_map(spec, image_size, extra) if centred else None
    if distortion is not None and not np.any(distortion):
        distortion = None
    return PSFField(
        psfs=normalise_psfs(psfs), image_size=(height_px, width_px), meta=meta, distortion=distortion
    )


def _centroid(psf: np.ndarray) -> np.ndarray:
    """(dy, dx) centroid in pixels about the centre of a ``(k, k)`` PSF."""
    coords = np.arange(psf.shape[-1]) - psf.shape[-1] // 2
    total = psf.sum()
    return np.array([(psf.sum(1) * coords).sum() / total, (psf.sum(0) * coords).sum() / total])


def resolve_preset(preset: str | LensSpec) -> LensSpec:
    if isinstance(preset, LensSpec):
        return preset
    if preset in PRESETS:
        return PRESETS[preset]
    if preset.startswith("random-") and preset[len("random-") :].isdigit():
        return random_lens(int(preset[len("random-") :]), name=preset)
    raise InputError(
        f"unknown lens preset (--preset) {preset!r} (known: {', '.join(PRESETS)}, random-<seed>)"
    )
