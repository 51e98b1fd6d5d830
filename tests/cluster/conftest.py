"""One Ray session for every test that needs Ray (see shared/notes/ray-2.60.md).

``ray_session`` is started on first use and shut down at the end of the run. The multi-node test
(``test_multinode.py``) needs the driver for its own ``ray.cluster_utils.Cluster``: its fixture shuts
the shared session down first, and the next test that asks for ``ray_session`` starts it again.
"""

import os

import pytest

os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")


def start_shared_ray() -> None:
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


@pytest.fixture(scope="session")
def _shared_ray_owner():
    """Shuts down whatever Ray session the tests left running, once, at the end."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def ray_session(_shared_ray_owner):
    import ray

    if not ray.is_initialized():
        start_shared_ray()
    return ray
