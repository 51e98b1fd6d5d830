"""Virtual cameras: PSF fields from a pupil-function (Fourier optics) model.

The wavefront error over the unit pupil ``(rho, theta)`` at normalised field height ``h`` (0 on
axis, 1 in the corner) is the Seidel sum
``W = W020 rho^2 + W040 rho^4 + W131 h rho^3 cos(theta) + (W222 cos^2(theta) + W220) h^2 rho^2``
(waves), with ``theta`` measured from the direction of the field point. Axial chromatic aberration
adds defocus per wavelength; lateral chromatic aberration is a tilt that grows with ``h``. The PSF
is ``|FFT(pupil * exp(2 pi i W))|^2``, sampled at ``pixel_pitch / s`` and integrated over pixels.
An aberration-free pupil gives the Airy pattern of its f-number.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

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

    def __post_init__(self) -> None:
        if self.f_number <= 0 or self.pixel_pitch_um <= 0:
            raise ValueError(f"lens {self.name!r}: f_number and pixel_pitch_um must be positive")
        if len(self.wavelengths_nm) != 3 or min(self.wavelengths_nm) <= 0:
            raise ValueError(f"lens {self.name!r}: wavelengths_nm must be 3 positive values")


PRESETS: dict[str, LensSpec] = {
    "ideal": LensSpec("ideal", f_number=2.8, pixel_pitch_um=1.4),
    "phone-wide": LensSpec(
        "phone-wide",
        f_number=1.8,
        pixel_pitch_um=1.0,
        defocus=0.1,
        spherical=0.25,
        coma=0.9,
        astigmatism=1.0,
        field_curvature=-0.6,
        axial_ca=0.35,
        lateral_ca_px=0.8,
    ),
    "phone-tele": LensSpec(
        "phone-tele",
        f_number=2.8,
        pixel_pitch_um=1.0,
        spherical=0.15,
        coma=0.5,
        astigmatism=0.6,
        field_curvature=-0.3,
        axial_ca=0.2,
        lateral_ca_px=0.4,
    ),
    "dslr-kit": LensSpec(
        "dslr-kit",
        f_number=4.0,
        pixel_pitch_um=4.3,
        spherical=0.5,
        coma=1.5,
        astigmatism=1.8,
        field_curvature=-1.0,
        axial_ca=0.6,
        lateral_ca_px=1.2,
    ),
    "vintage": LensSpec(
        "vintage",
        f_number=2.0,
        pixel_pitch_um=4.3,
        defocus=0.3,
        spherical=1.5,
        coma=2.0,
        astigmatism=2.0,
        field_curvature=-1.5,
        axial_ca=1.0,
        lateral_ca_px=1.5,
    ),
}


# The bundled camera profile each preset is paired with by default (small sensors with the compact).
PRESET_PROFILES = {
    "ideal": "canon-eos-5d-mark-ii",
    "phone-wide": "sony-rx100m4",
    "phone-tele": "sony-rx100m4",
    "dslr-kit": "nikon-d700",
    "vintage": "canon-eos-5d-mark-ii",
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


def _oversampling(spec: LensSpec) -> int:
    """Odd samples per pixel so that the PSF intensity is sampled without aliasing at every wavelength.

    The OTF cuts off at ``1 / (lambda N)``: Nyquist needs a sample spacing ``<= lambda N / 2``.
    """
    shortest = min(spec.wavelengths_nm) * 1e-3
    s = max(3, math.ceil(2 * spec.pixel_pitch_um / (shortest * spec.f_number)))
    return s if s % 2 == 1 else s + 1


def wavefront(spec: LensSpec, rho: np.ndarray, theta: np.ndarray, height: float, channel: int) -> np.ndarray:
    """Wavefront error in waves of ``channel`` at normalised field height ``height`` over the unit pupil."""
    defocus = spec.defocus + spec.axial_ca * (1 - channel)
    w = (defocus + (spec.astigmatism * np.cos(theta) ** 2 + spec.field_curvature) * height**2) * rho**2
    w = w + spec.spherical * rho**4 + spec.coma * height * rho**3 * np.cos(theta)
    # Lateral colour: a tilt of T waves moves the PSF by 2 T lambda N; R outward, B inward.
    shift_um = spec.lateral_ca_px * height * (1 - channel) * spec.pixel_pitch_um
    wavelength_um = spec.wavelengths_nm[channel] * 1e-3
    tilt = shift_um / (2 * wavelength_um * spec.f_number)
    return w + tilt * rho * np.cos(theta)


def oversampled_psf(
    spec: LensSpec, kernel_size: int, height: float, direction: float, channel: int
) -> tuple[np.ndarray, int]:
    """PSF intensity sampled at ``pixel_pitch / s`` on ``(k s, k s)`` points, centred; returns ``(psf, s)``.

    Args:
        height: normalised field height in [0, 1].
        direction: angle (radians) of the field point from the optical axis, image coordinates (y down).
    """
    s = _oversampling(spec)
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
    w = wavefront(spec, rho, theta, height, channel)
    field = pupil * np.exp(2j * np.pi * w)
    amplitude = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(field)))
    start = (n - crop) // 2
    psf = np.abs(amplitude[start : start + crop, start : start + crop]) ** 2
    return psf / psf.sum(), s


def pixel_psf(spec: LensSpec, kernel_size: int, height: float, direction: float, channel: int) -> np.ndarray:
    """(k, k) PSF integrated over square pixels, summing to 1."""
    psf, s = oversampled_psf(spec, kernel_size, height, direction, channel)
    binned = psf.reshape(kernel_size, s, kernel_size, s).sum(axis=(1, 3))
    return binned / binned.sum()


def lens_field(
    grid: tuple[int, int] = (6, 8),
    psf_size: int = 31,
    image_size: tuple[int, int] = (512, 768),
    preset: str | LensSpec = "phone-wide",
    camera: str | None = None,
    profile: str | None = None,
) -> PSFField:
    """A physically plausible PSF field of a virtual lens.

    Args:
        grid: (rows, cols) of FOV tiles.
        psf_size: k, odd.
        image_size: (H, W) of the sensor frame in pixels.
        preset: a name in ``PRESETS``, ``"random-<seed>"``, or a ``LensSpec``.
        camera: camera name stored in the field's metadata (default: the preset's name).
        profile: camera profile (bundled name or TOML path) the simulation should pair with it.

    Returns:
        ``PSFField`` with per-channel PSFs (R, G, B), ``meta`` recording the lens.
    """
    spec = resolve_preset(preset)
    rows, cols = grid
    if psf_size % 2 == 0 or psf_size < 3:
        raise ValueError(f"lens_field: psf_size must be odd and >= 3, got {psf_size}")
    if rows < 1 or cols < 1:
        raise ValueError(f"lens_field: grid must be positive, got {grid}")
    height_px, width_px = image_size
    half_diagonal = math.hypot(height_px / 2, width_px / 2)
    psfs = np.zeros((rows, cols, 3, psf_size, psf_size), dtype=np.float64)
    for r in range(rows):
        for c in range(cols):
            dy = (r + 0.5) * height_px / rows - height_px / 2
            dx = (c + 0.5) * width_px / cols - width_px / 2
            h = math.hypot(dy, dx) / half_diagonal
            direction = math.atan2(dy, dx)
            for ch in range(3):
                psfs[r, c, ch] = pixel_psf(spec, psf_size, h, direction, ch)
    meta = {
        "camera": camera or spec.name,
        "source": "degtrans.simulate.optics.lens_field",
        "lens": dataclasses.asdict(spec),
    }
    profile = profile or PRESET_PROFILES.get(spec.name)
    if profile:
        meta["profile"] = profile
    return PSFField(psfs=normalise_psfs(psfs), image_size=(height_px, width_px), meta=meta)


def resolve_preset(preset: str | LensSpec) -> LensSpec:
    if isinstance(preset, LensSpec):
        return preset
    if preset in PRESETS:
        return PRESETS[preset]
    if preset.startswith("random-") and preset[len("random-") :].isdigit():
        return random_lens(int(preset[len("random-") :]), name=preset)
    raise ValueError(f"unknown lens preset {preset!r} (known: {', '.join(PRESETS)}, random-<seed>)")
