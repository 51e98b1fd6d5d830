"""Test set-up: Triton runs through its interpreter when CUDA is absent (set before any kernel import)."""

import importlib.util
import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# One tolerance table for the whole suite (atol, rtol); a loosened tolerance says why where it is used.
TOLERANCES = {
    torch.float64: (1e-10, 1e-7),
    torch.float32: (1e-5, 1e-4),
    torch.float16: (1e-3, 8e-3),
    torch.bfloat16: (8e-3, 8e-3),
}


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def tolerance():
    """``tolerance(dtype) -> dict(atol=..., rtol=...)`` from the suite's table."""

    def lookup(dtype: torch.dtype) -> dict:
        atol, rtol = TOLERANCES[dtype]
        return {"atol": atol, "rtol": rtol}

    return lookup


@pytest.fixture
def benchmark_script():
    """``load(NAME)``: ``benchmarks/NAME.py`` imported as the module ``NAME`` (registered in
    ``sys.modules``, where its dataclasses look themselves up; removed after the test)."""
    loaded = []

    def load(name: str):
        path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loaded.append(name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
