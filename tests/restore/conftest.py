"""Fixtures of the restore tests: a tiny pair dataset in the shared contract, written with pyarrow."""

import pytest
import torch

from degtrans.testing.synthetic import gaussian_field
from degtrans.testing.toydata import write_toy_dataset

FRAME = (64, 96)
PATCH = 24


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the test machines are small and shared; oversubscription costs 10x here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_field():
    return gaussian_field(
        grid=(2, 3), psf_size=7, image_size=FRAME, sigma_centre=0.8, sigma_corner=1.6, camera="camA"
    )


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory, toy_field):
    """A 16-patch dataset (2 shards) of 24-pixel patches from 64x96 frames."""
    out = tmp_path_factory.mktemp("toy") / "data"
    return write_toy_dataset(
        out, toy_field, frames=2, patches_per_frame=8, patch_size=PATCH, shards=2, seed=1
    )
