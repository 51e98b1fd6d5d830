"""Dataset synthesis on Ray: worker count never changes the data; a killed run resumes cleanly."""

import numpy as np
import pytest
import torch

from degtrans.config import SimulateConfig
from tests.cluster.helpers import dataset_rows, synthesis_inputs

pytestmark = pytest.mark.ray

CONFIG = SimulateConfig(patch_size=16, patches_per_image=3, rows_per_file=4, row_group_rows=4)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return (root, *synthesis_inputs(root))


def test_one_and_two_workers_write_identical_rows(ray_session, inputs):
    from degtrans.cluster.synthesize import synthesize_dataset

    root, images, fields = inputs
    one = synthesize_dataset(images, fields, root / "one", CONFIG, workers=1)
    two = synthesize_dataset(images, fields, root / "two", CONFIG, workers=2)
    assert one["pairs"] == two["pairs"] == 3 * 2 * 3
    manifest_one, rows_one = dataset_rows(root / "one")
    manifest_two, rows_two = dataset_rows(root / "two")
    assert rows_one.equals(rows_two)
    assert [s["sha256"] for s in manifest_one["shards"]] == [s["sha256"] for s in manifest_two["shards"]]


def test_killed_run_completes_on_rerun_without_duplicates(ray_session, inputs):
    from degtrans.cluster.synthesize import synthesize_dataset

    root, images, fields = inputs
    out = root / "killed"

    class Killed(Exception):
        pass

    def kill(result):
        raise Killed(f"killed after shard {result.index}")

    with pytest.raises(Killed):
        synthesize_dataset(images, fields, out, CONFIG, workers=2, on_shard=kill)
    assert not (out / "_SUCCESS").exists()
    finished_before = sorted(p.name for p in (out / "shards").glob("part-*.parquet"))
    assert 1 <= len(finished_before) < 5

    summary = synthesize_dataset(images, fields, out, CONFIG, workers=2)
    manifest, rows = dataset_rows(out)
    ids = rows.column("sample_id").to_pylist()
    expected = {f"{cam}/img{i:04d}/p{p:02d}" for cam in ("camA", "camB") for i in range(3) for p in range(3)}
    assert len(ids) == len(set(ids)) and set(ids) == expected
    assert manifest["samples"] == len(expected) and (out / "_SUCCESS").exists()
    assert summary["pairs_written"] < len(expected)
    assert synthesize_dataset(images, fields, out, CONFIG, workers=2)["noop"]


def test_cli_with_store_raw(ray_session, inputs, capsys):
    import torch

    from degtrans.cli import main
    from degtrans.pairs import ISP_COLUMNS
    from degtrans.simulate.camera import CameraProfile
    from degtrans.simulate.cfa import demosaic, phase_pattern
    from degtrans.simulate.isp import ISPParams, process

    root, images, fields = inputs
    out = root / "cli"
    args = ["simulate", "--images", str(images), "--psf", str(fields[0]), "--profile", "sony-rx100m4"]
    args += ["--patch-size", "16", "--patches-per-image", "1", "--store-raw", "-o", str(out)]
    assert main(args) == 0
    assert "3 pairs" in capsys.readouterr().out
    manifest, rows = dataset_rows(out)
    assert manifest["config"]["store_raw"] and (out / "config.json").exists()
    camera = CameraProfile.bundled("sony-rx100m4")
    for row in rows.to_pylist():
        assert row["raw_pattern"] == phase_pattern(camera.cfa_pattern, (row["y0"], row["x0"]))
        black, white = row["raw_black_level"], row["raw_white_level"]
        raw = np.asarray(row["raw"], np.uint16).reshape(row["height"], row["width"]).astype(np.float64)
        assert raw.max() <= white
        # The stored mosaic is what the degraded image was developed from: develop it again.
        linear = torch.from_numpy((raw - black) / (white - black))[None, None]
        isp = ISPParams.from_vector(torch.tensor([[row[n] for n in ISP_COLUMNS]], dtype=torch.float64))
        developed = process(demosaic(linear, row["raw_pattern"]), isp)[0]
        degraded = np.asarray(row["degraded"], np.uint16).reshape(16, 16, 3) / 65535.0
        # Interior only (the pipeline demosaicked with context beyond the patch); 1 DN of
        # quantisation grows through gains and gamma to ~2e-3 in dark pixels.
        diff = developed.permute(1, 2, 0).numpy() - degraded
        assert np.abs(diff[2:-2, 2:-2]).max() < 1e-2


def test_gpu_request_without_cuda_falls_back_to_the_cpu_path(caplog):
    from degtrans.cluster.synthesize import shard_device, task_options

    assert task_options(0.25) == {"num_cpus": 1, "num_gpus": 0.25}
    assert shard_device(0.0) == "cpu"
    with pytest.raises(ValueError, match="gpus_per_worker"):
        task_options(-1)
    if torch.cuda.is_available():
        assert shard_device(0.25) == "cuda"
    else:
        assert shard_device(0.25) == "cpu" and "sees no CUDA device" in caplog.text


def test_cli_with_a_camera_catalogue(ray_session, inputs, capsys):
    from degtrans.cli import main

    root, images, fields = inputs
    catalogue = root / "cameras.toml"
    catalogue.write_text(
        f'[[camera]]\nfield = "{fields[0].name}"\n\n[[camera]]\nfield = "{fields[1].name}"\nweight = 3\n'
    )
    out = root / "catalogue"
    args = ["simulate", "--images", str(images), "--cameras", str(catalogue), "--patch-size", "16"]
    assert main([*args, "--patches-per-image", "2", "-o", str(out)]) == 0
    manifest, rows = dataset_rows(out)
    assert rows.column("sample_id").to_pylist() == [
        f"img{i:04d}/p{p:02d}" for i in range(3) for p in range(2)
    ]
    counts = {name: entry["samples"] for name, entry in manifest["cameras"].items()}
    assert sum(counts.values()) == 6 and manifest["cameras"]["camB"]["weight"] == 3.0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    assert "6 pairs" in capsys.readouterr().out
