"""The deploy templates in cluster/ parse and agree with the package: Ray version, entry points, resources."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

import degtrans
from degtrans.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
SHARED = "/mnt/shared"


def _pinned_ray() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [re.search(r"==([\d.]+)", d).group(1) for d in deps if re.match(r"ray\b", d)]
    return pin


def _load(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((CLUSTER / name).read_text()) if doc]


def _pod_specs(doc: dict) -> list[tuple[str, dict, dict]]:
    """(group, rayStartParams, pod spec) of a RayCluster spec's head and worker groups."""
    head = doc["headGroupSpec"]
    groups = [("head", head["rayStartParams"], head["template"]["spec"])]
    groups += [(g["groupName"], g["rayStartParams"], g["template"]["spec"]) for g in doc["workerGroupSpecs"]]
    return groups


def _cluster_specs() -> list[dict]:
    (raycluster, pvc) = _load("raycluster.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim"
    (rayjob,) = _load("rayjob.yaml")
    return [raycluster["spec"], rayjob["spec"]["rayClusterSpec"]]


def test_installed_ray_is_the_pinned_one():
    assert importlib.metadata.version("ray") == _pinned_ray()


@pytest.mark.parametrize("name", ["ray-cluster.yaml", "raycluster.yaml", "rayjob.yaml"])
def test_every_image_is_pinned_to_our_ray(name):
    text = (CLUSTER / name).read_text()
    images = re.findall(r"image:\s*(\S+)", text)
    assert images, f"{name}: no image"
    for image in images:
        assert image.endswith(f"ray{_pinned_ray()}") or f"ray:{_pinned_ray()}-" in image, image
        if image.startswith("REGISTRY/degtrans:"):
            assert image.split(":")[1].startswith(degtrans.__version__), image
    base = re.search(r"^FROM (\S+)", (CLUSTER / "Dockerfile").read_text(), re.M).group(1)
    assert base.startswith(f"rayproject/ray:{_pinned_ray()}-")


def test_kuberay_specs_pin_version_and_use_token_auth():
    for spec in _cluster_specs():
        assert spec["rayVersion"] == _pinned_ray()
        assert spec["authOptions"]["mode"] == "token"


def test_kuberay_gpu_resources_agree_and_storage_is_shared():
    (_, pvc) = _load("raycluster.yaml")
    for spec in _cluster_specs():
        for group, params, pod in _pod_specs(spec):
            (container,) = pod["containers"]
            limits = container["resources"]["limits"]
            # The GPUs Ray schedules on must be the GPUs Kubernetes gives the pod.
            assert int(params.get("num-gpus", "0")) == int(limits.get("nvidia.com/gpu", "0")), group
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
            assert mounts["shared"] == SHARED and claims["shared"] == pvc["metadata"]["name"], group
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # the head schedules no work
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]


def test_rayjob_entrypoint_is_a_valid_command_that_fits_the_cluster():
    (job,) = _load("rayjob.yaml")
    argv = shlex.split(job["spec"]["entrypoint"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts and scripts[argv[0]] == "degtrans.cli:main"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "train"
    assert str(args.data).startswith(SHARED) and str(args.output).startswith(SHARED)
    gpu_group = next(g for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    available = gpu_group["replicas"] * int(gpu_group["rayStartParams"]["num-gpus"])
    assert args.workers * args.gpus_per_worker <= available
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_launcher_has_cpu_head_gpu_workers_and_token_auth():
    (launcher,) = _load("ray-cluster.yaml")
    types = launcher["available_node_types"]
    assert types[launcher["head_node_type"]]["resources"]["CPU"] == 0
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())
    assert all("RAY_AUTH_MODE=token" in c for c in launcher["head_start_ray_commands"] if "ray start" in c)
    assert all("RAY_AUTH_MODE=token" in c for c in launcher["worker_start_ray_commands"] if "ray start" in c)
    assert SHARED in " ".join(launcher["docker"]["run_options"])
