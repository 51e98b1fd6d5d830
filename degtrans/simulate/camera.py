"""Camera profiles: CFA, black/white level, as-shot white balance, colour matrix, noise calibration.

Read from a real RAW file through rawpy/LibRaw (``CameraProfile.from_raw``: DNG, NEF, CR2, ARW, ...)
or from TOML (``CameraProfile.from_toml``); a few profiles ship with the package
(``CameraProfile.bundled(name)``, names in ``bundled_profiles()``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from degtrans.atomic import write_atomic
from degtrans.errors import InputError, MissingInput
from degtrans.simulate.cfa import PATTERNS, demosaic
from degtrans.simulate.isp import SRGB_TO_XYZ, ISPParams, process, rgb_to_cam_matrix
from degtrans.simulate.noise import NoiseModel

PROFILE_DIR = "data/cameras"


@dataclass(frozen=True)
class CameraProfile:
    """What the simulation needs to know about a camera.

    Attributes:
        name: short identifier (``canon-eos-5d-mark-ii``).
        cfa_pattern: Bayer pattern at the sensor's top-left pixel (``RGGB`` ...).
        black_level: (4,) black level in DN per 2x2 CFA position (raster order).
        white_level: saturation level in DN.
        as_shot_neutral: camera RGB of a neutral grey under the shot's illuminant (G = 1).
        xyz_to_cam: 3x3 colour matrix CIE XYZ (D65) -> camera RGB (DNG ``ColorMatrix``).
        noise: calibrated noise model.
        description, source: free text (where the numbers come from).
    """

    name: str
    cfa_pattern: str = "RGGB"
    black_level: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    white_level: float = 1.0
    as_shot_neutral: tuple[float, float, float] = (0.5, 1.0, 0.6)
    xyz_to_cam: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    noise: NoiseModel = field(default_factory=NoiseModel)
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "black_level", tuple(float(v) for v in self.black_level))
        object.__setattr__(self, "as_shot_neutral", tuple(float(v) for v in self.as_shot_neutral))
        object.__setattr__(self, "xyz_to_cam", tuple(tuple(float(v) for v in row) for row in self.xyz_to_cam))
        if problem := self._problem():
            raise InputError(f"camera profile {self.name!r}: {problem}")

    def _problem(self) -> str | None:
        if self.cfa_pattern not in PATTERNS:
            return f"cfa_pattern must be one of {list(PATTERNS)}, got {self.cfa_pattern!r}"
        if len(self.black_level) != 4:
            return f"black_level needs 4 values (one per CFA position), got {len(self.black_level)}"
        if not self.white_level > max(self.black_level):
            return f"white_level {self.white_level} must exceed the black level {max(self.black_level)}"
        if len(self.as_shot_neutral) != 3 or min(self.as_shot_neutral) <= 0:
            return f"as_shot_neutral must be 3 positive values, got {self.as_shot_neutral}"
        matrix = np.asarray(self.xyz_to_cam)
        if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
            return f"xyz_to_cam must be a finite 3x3 matrix, got shape {matrix.shape}"
        if abs(np.linalg.det(matrix)) < 1e-8 or np.any(np.abs(matrix @ np.ones(3)) < 1e-8):
            return "xyz_to_cam is singular (no usable colour matrix)"
        return None

    @property
    def rgb2cam(self) -> np.ndarray:
        """(3, 3) linear sRGB -> camera RGB, rows summing to 1."""
        return rgb_to_cam_matrix(np.asarray(self.xyz_to_cam))

    @property
    def wb_gains(self) -> tuple[float, float, float]:
        """As-shot white-balance gains (R, G, B), green = 1."""
        neutral = np.asarray(self.as_shot_neutral) / self.as_shot_neutral[1]
        return tuple(float(v) for v in 1.0 / neutral)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["black_level"] = list(self.black_level)
        data["as_shot_neutral"] = list(self.as_shot_neutral)
        data["xyz_to_cam"] = [list(row) for row in self.xyz_to_cam]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> CameraProfile:
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(data) - known):
            raise InputError(
                f"{source}: unknown camera profile key {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        values = dict(data)
        if "name" not in values:
            raise InputError(f"{source}: camera profile needs a 'name'")
        noise = values.pop("noise", {})
        try:
            return cls(**values, noise=NoiseModel(**noise))
        except TypeError as error:
            raise InputError(f"{source}: invalid camera profile: {error}") from error
        except ValueError as error:
            raise InputError(f"{source}: {error}") from error

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> CameraProfile:
        """Read a profile written by :meth:`save` (or by hand; see ``degtrans/data/cameras``)."""
        path = Path(path)
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError as error:
            raise MissingInput(f"{path}: camera profile not found") from error
        except tomllib.TOMLDecodeError as error:
            raise InputError(f"{path}: invalid TOML: {error}") from error
        return cls.from_dict(data, str(path))

    def save(self, path: str | os.PathLike) -> Path:
        """Write as TOML, atomically."""
        import tomli_w

        return write_atomic(path, tomli_w.dumps(self.to_dict()))

    @classmethod
    def from_raw(cls, path: str | os.PathLike, noise: NoiseModel | None = None) -> CameraProfile:
        """Read CFA, levels, as-shot white balance and colour matrix from a RAW file with rawpy.

        Raises:
            InputError: naming the file, if it is unreadable, corrupt, or not a Bayer RAW.
        """
        import rawpy

        path = Path(path)
        if not path.is_file():
            raise MissingInput(f"{path}: RAW file not found")
        try:
            with rawpy.imread(str(path)) as raw:
                pattern_idx = raw.raw_pattern
                desc = raw.color_desc.decode("ascii", "replace")
                blacks = list(raw.black_level_per_channel)
                white = float(raw.white_level)
                multipliers = list(raw.camera_whitebalance)
                xyz_table = np.array(raw.rgb_xyz_matrix, dtype=np.float64)[:3]
                embedded = np.array(raw.color_matrix, dtype=np.float64)[:3, :3]
        except rawpy.LibRawError as error:
            raise InputError(f"{path}: cannot read RAW file ({type(error).__name__}: {error})") from error
        if pattern_idx is None or np.asarray(pattern_idx).shape != (2, 2):
            raise InputError(
                f"{path}: unsupported RAW: not a 2x2 Bayer sensor (X-Trans, Foveon or linear DNG?)"
            )
        pattern = "".join(desc[int(i)] for i in np.asarray(pattern_idx).ravel())
        if pattern not in PATTERNS:
            raise InputError(
                f"{path}: unsupported CFA {pattern!r} (colours {desc!r}); expected one of {list(PATTERNS)}"
            )
        black = tuple(float(blacks[int(i)]) for i in np.asarray(pattern_idx).ravel())
        matrix = _xyz_to_cam(embedded, xyz_table)
        if matrix is None:
            raise InputError(f"{path}: RAW file carries no colour matrix (LibRaw knows none for this camera)")
        r, g, b = multipliers[0], multipliers[1], multipliers[2]
        if min(r, g, b) <= 0:
            raise InputError(f"{path}: RAW file carries no as-shot white balance ({multipliers})")
        neutral = (g / r, 1.0, g / b)
        try:
            return cls(
                name=path.stem,
                cfa_pattern=pattern,
                black_level=black,
                white_level=white,
                as_shot_neutral=neutral,
                xyz_to_cam=tuple(tuple(row) for row in matrix),
                noise=noise or NoiseModel(),
                source=f"rawpy {path.name}",
            )
        except ValueError as error:
            raise InputError(f"{path}: {error}") from error

    @classmethod
    def bundled(cls, name: str) -> CameraProfile:
        """A profile shipped in ``degtrans/data/cameras/<name>.toml``."""
        names = bundled_profiles()
        if name not in names:
            raise InputError(f"unknown bundled camera profile {name!r} (available: {', '.join(names)})")
        with resources.as_file(resources.files("degtrans").joinpath(f"{PROFILE_DIR}/{name}.toml")) as path:
            return cls.from_toml(path)


def _xyz_to_cam(embedded_cam2rgb: np.ndarray, xyz_table: np.ndarray) -> np.ndarray | None:
    """XYZ -> camera matrix of a RAW file, preferring the file's own colour matrix.

    LibRaw turns a DNG's ColorMatrix into ``color_matrix`` (camera -> sRGB, rows normalised) and
    leaves ``rgb_xyz_matrix`` to its built-in table for other formats. The row scale lost in that
    normalisation does not matter: ``rgb2cam`` normalises rows again.
    """
    if np.any(embedded_cam2rgb) and abs(np.linalg.det(embedded_cam2rgb)) > 1e-8:
        return np.linalg.inv(embedded_cam2rgb) @ np.linalg.inv(SRGB_TO_XYZ)
    if np.any(xyz_table):
        return xyz_table
    return None


def bundled_profiles() -> list[str]:
    """Names of the camera profiles shipped with the package."""
    folder = resources.files("degtrans").joinpath(PROFILE_DIR)
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str | os.PathLike) -> CameraProfile:
    """A bundled profile by name, a TOML profile by path, or a RAW file's profile by path."""
    text = str(name_or_path)
    if text in bundled_profiles():
        return CameraProfile.bundled(text)
    path = Path(text)
    if path.suffix.lower() == ".toml":
        return CameraProfile.from_toml(path)
    if path.exists():
        return CameraProfile.from_raw(path)
    raise InputError(
        f"camera profile {text!r}: not a bundled name ({', '.join(bundled_profiles())}),"
        " a .toml file or a RAW file"
    )


def develop_raw(path: str | os.PathLike) -> np.ndarray:
    """Develop a Bayer RAW file with the simulation's own ISP (what the networks were trained on).

    Black/white levels, Malvar demosaicking, the as-shot white balance and the camera's colour matrix
    the file itself (:meth:`CameraProfile.from_raw`), then gamma and tone curve (``process``).

    Returns:
        (H, W, 3) float32 processed RGB in [0, 1].
    """
    import rawpy
    import torch

    path = Path(path)
    profile = CameraProfile.from_raw(path)
    try:
        with rawpy.imread(str(path)) as raw:
            mosaic = raw.raw_image_visible.astype(np.float32)
            colours = np.asarray(raw.raw_colors_visible[:2, :2])
            desc = raw.color_desc.decode("ascii", "replace")
    except rawpy.LibRawError as error:
        raise InputError(f"{path}: cannot read RAW file ({type(error).__name__}: {error})") from error
    # The pattern of the visible area's top-left pixel (the sensor's margin may shift the phase).
    pattern = "".join(desc[int(c)] for c in colours.ravel())
    if pattern not in PATTERNS:
        pattern = profile.cfa_pattern
    black = np.asarray(profile.black_level, dtype=np.float32).reshape(2, 2)
    height, width = mosaic.shape
    black_map = np.tile(black, ((height + 1) // 2, (width + 1) // 2))[:height, :width]
    normalised = np.clip((mosaic - black_map) / (profile.white_level - black_map), 0.0, 1.0)
    linear = demosaic(torch.from_numpy(normalised)[None, None], pattern, method="malvar").clamp(0.0, 1.0)
    gains = profile.wb_gains
    params = ISPParams(
        rgb2cam=torch.from_numpy(profile.rgb2cam).float()[None],
        rgb_gain=torch.ones(1),
        red_gain=torch.tensor([gains[0]], dtype=torch.float32),
        blue_gain=torch.tensor([gains[2]], dtype=torch.float32),
    )
    return process(linear, params)[0].permute(1, 2, 0).numpy().astype(np.float32)
