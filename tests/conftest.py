"""Test set-up: Triton runs through its interpreter when CUDA is absent (set before any kernel import)."""

import os

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
