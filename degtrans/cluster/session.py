"""Starting or joining Ray: embedded local by default, a cluster with ``--address``."""

from __future__ import annotations

import logging
import os

import ray

log = logging.getLogger(__name__)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Initialise Ray once per process.

    Args:
        address: ``None`` starts an embedded local Ray, unless ``RAY_ADDRESS`` names a cluster (as it
            does inside a Ray job), which is then joined; ``"auto"`` or ``"ray://..."`` joins a cluster.
        num_cpus: logical CPUs of the embedded Ray; defaults to twice the cores, because Ray Data
            needs spare logical CPUs beside training workers and actors (Ray Train's data loading guide,
            https://docs.ray.io/en/latest/train/user-guides/data-loading-preprocessing.html).
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    # A Ray job's driver (``degtrans submit``) gets RAY_ADDRESS and this variable from the job
    # supervisor; its output is the job's log, and the workers' output goes there too.
    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        cpus = num_cpus if num_cpus is not None else max(4, 2 * (os.cpu_count() or 2))
        log.info("starting embedded Ray with %d logical CPUs", cpus)
        # address="local": a new embedded instance even when a `ray start` cluster runs on this host
        # (plain ray.init() would join that one, and refuse num_cpus).
        ray.init(
            address="local",
            num_cpus=cpus,
            include_dashboard=True,
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=in_job)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
