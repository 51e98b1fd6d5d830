"""The GPU synthesis path (Triton blur, ISP on the device) writes the CPU path's shards within tolerance."""

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest

from degtrans.config import SimulateConfig
from degtrans.simulate.catalogue import fields_as_entries
from degtrans.simulate.plan import plan_shards, resolve_cameras
from degtrans.simulate.shards import write_shard
from degtrans.simulate.sources import list_images, scan_sources
from tests.simulate.test_dataset import _make_inputs

CONFIG = SimulateConfig(patch_size=24, patches_per_image=3, rows_per_file=4, row_group_rows=2)


@pytest.fixture
def inputs(tmp_path):
    return _make_inputs(tmp_path)


def _specs(inputs, output, config=CONFIG):
    images, fields = inputs
    sources, _ = scan_sources(list_images(images))
    return plan_shards(output, sources, resolve_cameras(fields_as_entries(fields)), config)


@pytest.mark.gpu
def test_gpu_shards_match_cpu_shards_within_kernel_tolerance(inputs, tmp_path):
    gpu_specs, cpu_specs = _specs(inputs, tmp_path / "gpu"), _specs(inputs, tmp_path / "cpu")
    for gpu_spec, cpu_spec in zip(gpu_specs, cpu_specs, strict=True):
        gpu = pq.read_table(write_shard(gpu_spec, device="cuda").path)
        cpu = pq.read_table(write_shard(cpu_spec, device="cpu").path)
        assert gpu.num_rows == cpu.num_rows
        # Positions and every sampled parameter come from the CPU generator: exactly equal.
        for name in gpu.column_names:
            if name not in ("clean", "degraded"):
                assert gpu.column(name).equals(cpu.column(name)), name
        for name in ("clean", "degraded"):
            a = np.concatenate(gpu.column(name).to_pylist()).astype(np.int32)
            b = np.concatenate(cpu.column(name).to_pylist()).astype(np.int32)
            # Triton and the CPU path sum in another order (~1e-6 relative); gamma and quantisation
            # turn that into at most a few DN (of 65535) in dark pixels, almost none elsewhere.
            assert np.abs(a - b).max() <= 8 and np.mean(a != b) < 0.05, name


def test_device_argument_on_the_cpu_gives_the_default_shard(inputs, tmp_path):
    config = dataclasses.replace(CONFIG, patches_per_image=1)
    a, b = _specs(inputs, tmp_path / "a", config)[0], _specs(inputs, tmp_path / "b", config)[0]
    assert pq.read_table(write_shard(a).path).equals(pq.read_table(write_shard(b, device="cpu").path))
