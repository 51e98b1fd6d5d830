"""Dataset synthesis without Ray: plan, shard writer, manifest. ``degtrans.cluster.synthesize`` runs
the same shards as Ray tasks.

Guarantees: the full list of ``sample_id``s is planned up front and cut into fixed shards, so a pair
depends only on ``(seed, sample_id)``; each shard is written atomically (temporary name, rename);
a rerun writes only the missing shards; ``manifest.json`` and then ``_SUCCESS`` are written last; a
finished dataset is left untouched. Layout: ``OUT/shards/part-XXXXX.parquet``,
``OUT/fields/<camera>.npz``, ``OUT/manifest.json``, ``OUT/_SUCCESS``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from degtrans import __version__
from degtrans.atomic import write_atomic
from degtrans.config import SimulateConfig, to_dict
from degtrans.field import PSFField
from degtrans.simulate.camera import CameraProfile, load_profile
from degtrans.simulate.degrade import context_window, sample_generator, sample_params, simulate_pair
from degtrans.simulate.isp import ISPRanges
from degtrans.simulate.noise import NoiseModel

log = logging.getLogger(__name__)

FORMAT = "degtrans-pairs"
FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
DEFAULT_PROFILE = "canon-eos-5d-mark-ii"
MAX_ROW_GROUP_BYTES = 100 * 1000 * 1000
IMAGE_COLUMNS = ("clean", "degraded", "raw")
SHARD_PREFIX = "part-"


@dataclass(frozen=True)
class Source:
    """A clean image: ``name`` (unique, used in sample ids), where to read it, its frame size."""

    name: str
    path: str
    row: int | None
    height: int
    width: int


@dataclass(frozen=True)
class Camera:
    """A virtual camera of the dataset: PSF field file and profile."""

    name: str
    field_path: str
    field_sha256: str
    profile: dict[str, Any]


@dataclass(frozen=True)
class ShardSpec:
    """Everything a worker needs to write one shard; picklable, no open files."""

    index: int
    output: str
    samples: tuple[tuple[str, int, int, int], ...]
    sources: tuple[Source, ...]
    cameras: tuple[Camera, ...]
    settings: dict[str, Any]
    fingerprint: str

    @property
    def path(self) -> Path:
        return Path(self.output) / "shards" / f"{SHARD_PREFIX}{self.index:05d}.parquet"


@dataclass(frozen=True)
class ShardResult:
    index: int
    path: str
    rows: int
    sha256: str
    skipped: list[dict[str, str]] = field(default_factory=list)
    written: bool = True


# ---------------------------------------------------------------- inputs


def bundled_images() -> list[Path]:
    """The small clean photographs shipped with the package (cut from scikit-image's ``data``)."""
    folder = resources.files("degtrans").joinpath("data/images")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES))


def list_images(images: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Image files (and ``.parquet`` files of encoded images) from a folder, a file, or a list of them."""
    items = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in (*IMAGE_SUFFIXES, ".parquet"))
        elif path.is_file():
            found.append(path)
        else:
            raise ValueError(f"--images: {path} does not exist")
    if not found:
        raise ValueError(f"--images: no images (*{', *'.join(IMAGE_SUFFIXES)}, *.parquet) in {items}")
    return found


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Encoded PNG/JPEG/TIFF bytes -> (H, W, 3) float32 in [0, 1] (8- and 16-bit, grey, alpha)."""
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"{where}: cannot decode image")
    if array.dtype == np.uint8:
        scale = 255.0
    elif array.dtype == np.uint16:
        scale = 65535.0
    elif array.dtype in (np.float32, np.float64):
        scale = 1.0
    else:
        raise ValueError(f"{where}: unsupported image type {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    elif array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    else:
        raise ValueError(f"{where}: unsupported channel count {array.shape[2]}")
    return np.clip(array.astype(np.float32) / scale, 0.0, 1.0)


def _read_bytes(source: Source) -> bytes:
    if source.row is None:
        return Path(source.path).read_bytes()
    table = pq.read_table(source.path, columns=["image"])
    return table.column("image")[source.row].as_py()


def load_source(source: Source) -> np.ndarray:
    """Decode a planned clean image; raises ``ValueError`` naming it if unreadable."""
    where = source.path if source.row is None else f"{source.path}#{source.row}"
    try:
        data = _read_bytes(source)
    except OSError as error:
        raise ValueError(f"{where}: cannot read: {error}") from error
    image = decode_image(data, where)
    if image.shape[:2] != (source.height, source.width):
        raise ValueError(f"{where}: decoded size {image.shape[:2]} differs from its header")
    return image


def _header_size(data_or_path: bytes | Path) -> tuple[int, int]:
    from PIL import Image

    handle = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    with Image.open(handle) as image:
        width, height = image.size
    return height, width


def scan_sources(paths: Sequence[Path]) -> tuple[list[Source], list[dict[str, str]]]:
    """Read every image's header: sources with their size, and the unreadable ones (skipped)."""
    sources: list[Source] = []
    skipped: list[dict[str, str]] = []
    for path in paths:
        if path.suffix.lower() == ".parquet":
            try:
                table = pq.read_table(path)
                if "image" not in table.column_names:
                    raise ValueError(
                        f"{path}: a Parquet input needs a binary column 'image' (encoded images)"
                    )
                names = table.column("name").to_pylist() if "name" in table.column_names else None
                blobs = table.column("image").to_pylist()
            except (OSError, pa.ArrowException) as error:
                raise ValueError(f"{path}: cannot read Parquet images: {error}") from error
            for row, blob in enumerate(blobs):
                name = str(names[row]) if names else f"{path.stem}-{row:05d}"
                name = Path(name).stem
                try:
                    size = _header_size(blob)
                except Exception as error:  # PIL raises many types for corrupt data
                    log.warning("skipping %s#%d: %s", path, row, error)
                    skipped.append({"source": f"{path}#{row}", "reason": f"unreadable image: {error}"})
                    continue
                sources.append(Source(name, str(path.resolve()), row, *size))
            continue
        try:
            size = _header_size(path)
        except Exception as error:  # PIL raises many types for corrupt files
            log.warning("skipping %s: %s", path, error)
            skipped.append({"source": str(path), "reason": f"unreadable image: {error}"})
            continue
        sources.append(Source(path.stem, str(path.resolve()), None, *size))
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"--images: several images share the name {duplicates[0]!r} (sample ids need unique names)"
        )
    return sorted(sources, key=lambda s: s.name), skipped


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_cameras(
    fields: Sequence[str | os.PathLike], profiles: Sequence[str | os.PathLike] | None
) -> tuple[list[Camera], dict[str, PSFField]]:
    """Cameras named after their field files; profile per field (one for all, or from the field's meta)."""
    if not fields:
        raise ValueError("--psf: give at least one PSF field (.npz)")
    if profiles and len(profiles) not in (1, len(fields)):
        raise ValueError(
            f"--profile: give one profile, or one per --psf ({len(fields)}), got {len(profiles)}"
        )
    cameras, loaded = [], {}
    for i, path in enumerate(fields):
        psf_field = PSFField.load(path)
        if psf_field.psfs.shape[2] != 3:
            raise ValueError(
                f"{path}: the simulation needs an RGB field, got {psf_field.psfs.shape[2]} channels"
            )
        name = Path(path).stem
        if name in loaded:
            raise ValueError(f"--psf: two fields are named {name!r} (camera names come from the file names)")
        choice = (
            profiles[i if len(profiles) > 1 else 0]
            if profiles
            else psf_field.meta.get("profile", DEFAULT_PROFILE)
        )
        profile = load_profile(choice)
        cameras.append(Camera(name, str(Path(path).resolve()), file_sha256(path), profile.to_dict()))
        loaded[name] = psf_field
    return cameras, loaded


def check_frames(
    sources: Sequence[Source], cameras: Sequence[Camera], fields: dict[str, PSFField], config: SimulateConfig
) -> None:
    """Patch size fits every image; every field fits every frame unless ``fit_field``."""
    if config.patch_size < 1 or config.patches_per_image < 1:
        raise ValueError(
            f"simulate: patch_size and patches_per_image must be positive, got {config.patch_size}, "
            f"{config.patches_per_image}"
        )
    for source in sources:
        where = source.path if source.row is None else f"{source.path}#{source.row}"
        if config.patch_size > min(source.height, source.width):
            raise ValueError(
                f"{where}: patch size {config.patch_size} is larger than the image "
                f"({source.height}x{source.width})"
            )
        if config.fit_field:
            continue
        for camera in cameras:
            size = fields[camera.name].image_size
            if size != (source.height, source.width):
                raise ValueError(
                    f"{where}: frame {source.height}x{source.width} does not match "
                    f"the PSF field {camera.field_path} "
                    f"(made for {size[0]}x{size[1]}); pass --fit-field to stretch the field over the frame"
                )


# ---------------------------------------------------------------- plan


def plan_samples(
    sources: Sequence[Source], cameras: Sequence[Camera], patches_per_image: int
) -> list[tuple[str, int, int, int]]:
    """Every ``(sample_id, source index, camera index, patch)``, in a fixed order."""
    return [
        (f"{camera.name}/{source.name}/p{p:02d}", s, c, p)
        for s, source in enumerate(sources)
        for c, camera in enumerate(cameras)
        for p in range(patches_per_image)
    ]


def _settings(config: SimulateConfig) -> dict[str, Any]:
    """What the pixels depend on (``workers`` does not)."""
    settings = to_dict(config)
    settings.pop("workers", None)
    return settings


def fingerprint(settings: dict[str, Any], sources: Sequence[Source], cameras: Sequence[Camera]) -> str:
    payload = {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "sources": [[s.name, s.height, s.width] for s in sources],
        "cameras": [[c.name, c.field_sha256, c.profile] for c in cameras],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan_shards(
    output: Path, sources: Sequence[Source], cameras: Sequence[Camera], config: SimulateConfig
) -> list[ShardSpec]:
    """Fixed shards of ``rows_per_file`` consecutive samples; each carries only the sources it uses."""
    if config.rows_per_file < 1 or config.patches_per_image < 1:
        raise ValueError("simulate: rows_per_file and patches_per_image must be positive")
    settings = _settings(config)
    print_ = fingerprint(settings, sources, cameras)
    samples = plan_samples(sources, cameras, config.patches_per_image)
    specs = []
    for index, start in enumerate(range(0, len(samples), config.rows_per_file)):
        chunk = samples[start : start + config.rows_per_file]
        used = sorted({s for _, s, _, _ in chunk})
        remap = {s: i for i, s in enumerate(used)}
        specs.append(
            ShardSpec(
                index=index,
                output=str(output),
                samples=tuple((sid, remap[s], c, p) for sid, s, c, p in chunk),
                sources=tuple(sources[s] for s in used),
                cameras=tuple(cameras),
                settings=settings,
                fingerprint=print_,
            )
        )
    return specs


# ---------------------------------------------------------------- shard writer


def encode_u16(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> flattened HWC uint16, ``round(v * 65535)``."""
    hwc = image.detach().permute(1, 2, 0).clamp(0, 1).double().numpy()
    return np.rint(hwc * 65535.0).astype(np.uint16).ravel()


def _schema(spec: ShardSpec, store_raw: bool) -> pa.Schema:
    ints = ["y0", "x0", "frame_h", "frame_w", "height", "width", "channels"]
    fields = [
        pa.field("sample_id", pa.string()),
        pa.field("camera", pa.string()),
        pa.field("source", pa.string()),
    ]
    fields += [pa.field(n, pa.int32()) for n in ints]
    fields += [pa.field("clean", pa.list_(pa.uint16())), pa.field("degraded", pa.list_(pa.uint16()))]
    probe = sample_params(torch.Generator().manual_seed(0), CameraProfile.from_dict(spec.cameras[0].profile))
    fields += [pa.field(n, pa.float64()) for n in probe.columns()]
    if store_raw:
        fields += [pa.field("raw", pa.list_(pa.uint16())), pa.field("raw_pattern", pa.string())]
        fields += [pa.field("raw_black_level", pa.float64()), pa.field("raw_white_level", pa.float64())]
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "shard": spec.index,
        "fingerprint": spec.fingerprint,
        "patch_size": spec.settings["patch_size"],
        "layout": "clean/degraded: flattened HWC uint16 = round(v * 65535); raw: (H, W) camera DN",
    }
    return pa.schema(fields, metadata={b"degtrans": json.dumps(header).encode()})


def _row_group_rows(settings: dict[str, Any]) -> int:
    patch = settings["patch_size"]
    per_row = patch * patch * 3 * 2 * 2 + (patch * patch * 2 if settings["store_raw"] else 0)
    return max(1, min(settings["row_group_rows"], MAX_ROW_GROUP_BYTES // per_row))


def _to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    columns = {}
    for name in schema.names:
        values = [row[name] for row in rows]
        if name in IMAGE_COLUMNS:
            offsets = np.zeros(len(values) + 1, dtype=np.int32)
            np.cumsum([v.size for v in values], out=offsets[1:])
            columns[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(values)))
        else:
            columns[name] = pa.array(values, type=schema.field(name).type)
    return pa.table(columns, schema=schema)


def _shard_field(base: PSFField, source: Source, fit: bool) -> PSFField:
    if not fit or base.image_size == (source.height, source.width):
        return base
    return PSFField(base.psfs, (source.height, source.width), base.channels, base.domain, base.meta)


def simulate_sample(
    image: np.ndarray,
    psf_field: PSFField,
    camera: CameraProfile,
    sample_id: str,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """One row of the dataset from its clean frame; depends only on ``(seed, sample_id)`` and inputs."""
    patch = settings["patch_size"]
    height, width = image.shape[:2]
    generator = sample_generator(settings["seed"], sample_id)
    y0 = int(torch.randint(0, height - patch + 1, (1,), generator=generator))
    x0 = int(torch.randint(0, width - patch + 1, (1,), generator=generator))
    noise_model = NoiseModel(
        shot_min=10.0 ** settings["log_shot_noise_min"],
        shot_max=10.0 ** settings["log_shot_noise_max"],
        read_slope=camera.noise.read_slope,
        read_intercept=camera.noise.read_intercept,
        read_sigma=camera.noise.read_sigma,
    )
    params = sample_params(generator, camera, ISPRanges(), noise_model)
    top, bottom, left, right = context_window(y0, x0, (patch, patch), (height, width), psf_field.kernel_size)
    crop = torch.from_numpy(np.ascontiguousarray(image[top:bottom, left:right])).permute(2, 0, 1)[None]
    pattern = camera.cfa_pattern if settings["cfa_pattern"] == "camera" else settings["cfa_pattern"]
    pair = simulate_pair(
        crop,
        psf_field,
        camera,
        params,
        generator,
        offset=(top, left),
        frame_size=(height, width),
        crop=(y0 - top, x0 - left, patch, patch),
        cfa_pattern=pattern,
        demosaic_method=settings["demosaic"],
        noise=settings["noise"],
        clean_cfa=settings["clean_cfa"],
    )
    row: dict[str, Any] = {
        "sample_id": sample_id,
        "camera": sample_id.split("/", 1)[0],
        "y0": y0,
        "x0": x0,
        "frame_h": height,
        "frame_w": width,
        "height": patch,
        "width": patch,
        "channels": 3,
        "clean": encode_u16(pair.clean[0]),
        "degraded": encode_u16(pair.degraded[0]),
        **params.columns(),
    }
    if settings["store_raw"]:
        from degtrans.simulate.cfa import phase_pattern

        black = float(np.mean(camera.black_level))
        dn = black + pair.raw[0, 0].detach().double().numpy() * (camera.white_level - black)
        row["raw"] = np.clip(np.rint(dn), 0, 65535).astype(np.uint16).ravel()
        row["raw_pattern"] = phase_pattern(pattern, (y0, x0))
        row["raw_black_level"] = black
        row["raw_white_level"] = float(camera.white_level)
    return row


def write_shard(spec: ShardSpec) -> ShardResult:
    """Simulate and write one shard atomically; an unreadable image is skipped and recorded."""
    settings = spec.settings
    cameras = [CameraProfile.from_dict(c.profile) for c in spec.cameras]
    fields = [PSFField.load(c.field_path) for c in spec.cameras]
    schema = _schema(spec, settings["store_raw"])
    group = _row_group_rows(settings)
    final = spec.path
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    skipped: list[dict[str, str]] = []
    rows: list[dict[str, Any]] = []
    total = 0
    current: tuple[int, np.ndarray | None] = (-1, None)
    writer = pq.ParquetWriter(
        tmp,
        schema,
        compression="zstd",
        use_dictionary=False,
        column_encoding={
            f"{n}.list.element": "BYTE_STREAM_SPLIT" for n in IMAGE_COLUMNS if n in schema.names
        },
        write_statistics=[n for n in schema.names if n not in IMAGE_COLUMNS],
    )
    try:
        for sample_id, s, c, _ in spec.samples:
            source = spec.sources[s]
            if current[0] != s:
                try:
                    current = (s, load_source(source))
                except ValueError as error:
                    log.warning("skipping %s", error)
                    skipped.append(
                        {
                            "source": source.path if source.row is None else f"{source.path}#{source.row}",
                            "reason": str(error),
                        }
                    )
                    current = (s, None)
            if current[1] is None:
                continue
            row = simulate_sample(
                current[1],
                _shard_field(fields[c], source, settings["fit_field"]),
                cameras[c],
                sample_id,
                settings,
            )
            row["source"] = source.name
            rows.append(row)
            if len(rows) == group:
                writer.write_table(_to_table(rows, schema), row_group_size=group)
                total += len(rows)
                rows = []
        if rows:
            writer.write_table(_to_table(rows, schema), row_group_size=group)
            total += len(rows)
        writer.add_key_value_metadata({"degtrans_shard": json.dumps({"rows": total, "skipped": skipped})})
        writer.close()
        os.replace(tmp, final)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return ShardResult(spec.index, str(final), total, file_sha256(final), skipped)


def existing_shard(spec: ShardSpec) -> ShardResult | None:
    """The result of a shard already on disk and complete for this plan, else ``None``.

    A shard of another plan (different inputs or config) is an error: the output belongs to another dataset.
    """
    path = spec.path
    if not path.exists():
        return None
    try:
        metadata = pq.read_metadata(path)
        kv = metadata.metadata or {}
        header = json.loads(kv[b"degtrans"])
        info = json.loads(kv[b"degtrans_shard"])
    except (OSError, KeyError, ValueError, pa.ArrowException) as error:
        log.warning("rewriting unreadable shard %s (%s)", path, error)
        path.unlink()
        return None
    if header.get("fingerprint") != spec.fingerprint:
        raise ValueError(
            f"{path}: this shard belongs to another dataset (other inputs or config); "
            f"write to a new output directory or delete {spec.output}"
        )
    if metadata.num_rows != info["rows"]:
        log.warning("rewriting incomplete shard %s", path)
        path.unlink()
        return None
    return ShardResult(
        spec.index, str(path), int(info["rows"]), file_sha256(path), list(info["skipped"]), written=False
    )


# ---------------------------------------------------------------- driver


def _copy_atomic(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle, open(source, "rb") as src:
        shutil.copyfileobj(src, handle)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def serial_map(specs: Sequence[ShardSpec]) -> Iterator[ShardResult]:
    """Write shards one after another in this process."""
    for spec in specs:
        yield write_shard(spec)


MapShards = Callable[[Sequence[ShardSpec]], Iterable[ShardResult]]


def build_dataset(
    images: Sequence[str | os.PathLike] | str | os.PathLike,
    fields: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    config: SimulateConfig,
    *,
    profiles: Sequence[str | os.PathLike] | None = None,
    map_shards: MapShards = serial_map,
    on_shard: Callable[[ShardResult], None] | None = None,
) -> dict[str, Any]:
    """Plan, write the missing shards with ``map_shards``, then the manifest and ``_SUCCESS``.

    Args:
        images: folder(s) or files of clean images (PNG/JPEG/TIFF), or Parquet files with an
            ``image`` column of encoded images (and optional ``name``).
        fields: PSF field files, one camera each (named after the file).
        output: dataset directory.
        config: the ``[simulate]`` section.
        profiles: camera profile per field (bundled name, TOML or RAW file); one for all; default
            the field's ``meta["profile"]`` or ``canon-eos-5d-mark-ii``.
        map_shards: runs shard specs, yielding results as they finish (serial here, Ray in cluster).
        on_shard: called after every finished shard (progress, tests).

    Returns:
        The summary: pairs, pairs written now, MPix, seconds, pairs/s, skipped, shards, noop.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    # Absolute paths: Ray workers (on other nodes too) do not share the driver's working directory.
    output = Path(output).resolve()
    sources, skipped = scan_sources(list_images(images))
    if not sources:
        raise ValueError(f"--images: none of the images could be read ({len(skipped)} skipped)")
    cameras, loaded = resolve_cameras(fields, profiles)
    check_frames(sources, cameras, loaded, config)
    specs = plan_shards(output, sources, cameras, config)
    print_ = specs[0].fingerprint
    manifest_path = output / "manifest.json"
    if (output / "_SUCCESS").exists() and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("fingerprint") != print_:
            raise ValueError(
                f"{output}: holds a finished dataset with other inputs or config; "
                "choose a new output directory"
            )
        log.info("%s is complete; nothing to do", output)
        return _summary(manifest, output, written=0, seconds=time.perf_counter() - start, noop=True)
    (output / "shards").mkdir(parents=True, exist_ok=True)
    (output / "fields").mkdir(parents=True, exist_ok=True)
    for stale in (output / "shards").glob(f".{SHARD_PREFIX}*.tmp"):
        stale.unlink(missing_ok=True)
    results = {r.index: r for r in (existing_shard(s) for s in specs) if r is not None}
    for camera in cameras:
        target = output / "fields" / f"{camera.name}.npz"
        if not target.exists() or file_sha256(target) != camera.field_sha256:
            _copy_atomic(Path(camera.field_path), target)

    missing = [s for s in specs if s.index not in results]
    planned = sum(len(s.samples) for s in specs)
    done_before = sum(r.rows for r in results.values())
    written = 0
    with tqdm(total=planned, initial=done_before, unit="pair", desc="simulate", dynamic_ncols=True) as bar:
        for result in map_shards(missing):
            results[result.index] = result
            written += result.rows
            bar.update(len(specs[result.index].samples))
            if on_shard is not None:
                on_shard(result)
    ordered = [results[s.index] for s in specs]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "fingerprint": print_,
        "patch_size": config.patch_size,
        "shards": [
            {"path": f"shards/{Path(r.path).name}", "rows": r.rows, "sha256": r.sha256} for r in ordered
        ],
        "samples": sum(r.rows for r in ordered),
        "cameras": {
            c.name: {
                "field": f"fields/{c.name}.npz",
                "sha256": c.field_sha256,
                "frame_h": loaded[c.name].image_size[0],
                "frame_w": loaded[c.name].image_size[1],
                "profile": c.profile,
            }
            for c in cameras
        },
        "skipped": _unique_sources(skipped + [entry for r in ordered for entry in r.skipped]),
        "sources": len(sources),
        "config": to_dict(config),
    }
    write_atomic(manifest_path, json.dumps(manifest, indent=2))
    write_atomic(output / "_SUCCESS", "")
    return _summary(manifest, output, written=written, seconds=time.perf_counter() - start, noop=False)


def _unique_sources(entries: list[dict[str, str]]) -> list[dict[str, str]]:
    """One entry per skipped image (an image whose samples span two shards is seen twice)."""
    seen: dict[str, dict[str, str]] = {}
    for entry in entries:
        seen.setdefault(entry["source"], entry)
    return list(seen.values())


def _summary(
    manifest: dict[str, Any], output: Path, written: int, seconds: float, noop: bool
) -> dict[str, Any]:
    patch = manifest["patch_size"]
    return {
        "output": str(output),
        "pairs": manifest["samples"],
        "pairs_written": written,
        "mpix_written": written * patch * patch / 1e6,
        "seconds": seconds,
        "pairs_per_s": written / seconds if seconds > 0 else 0.0,
        "skipped": len(manifest["skipped"]),
        "shards": len(manifest["shards"]),
        "cameras": sorted(manifest["cameras"]),
        "noop": noop,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """One line a person reads at the end of a run."""
    if summary["noop"]:
        return (
            f"{summary['output']}: complete already ({summary['pairs']} pairs, "
            f"{summary['shards']} shards); nothing to do"
        )
    return (
        f"{summary['output']}: {summary['pairs']} pairs in {summary['shards']} shards "
        f"({summary['pairs_written']} written now, {summary['mpix_written']:.1f} MPix, "
        f"{summary['pairs_per_s']:.2f} pairs/s over {summary['seconds']:.1f} s), "
        f"{summary['skipped']} skipped image(s), cameras {', '.join(summary['cameras'])}"
    )
