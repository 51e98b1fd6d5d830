"""One Ray session for every test that needs Ray (see shared/notes/ray-2.60.md)."""

import os

import pytest

os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    import ray
    from ray.data import DataContext

    ray.init(
        address="local",  # never join another `ray start` cluster on this host
        num_cpus=4,
        include_dashboard=True,
        object_store_memory=256 * 1024 * 1024,
        log_to_driver=False,
        configure_logging=False,
    )
    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
