"""House rule: ray is imported only in degtrans/cluster/, triton only in degtrans/kernels/**/_triton*.py."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "degtrans"


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_ray_only_in_cluster():
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "ray" in _imported_roots(p) and "cluster" not in p.relative_to(PACKAGE).parts[:1]
    ]
    assert offenders == []


def test_triton_only_in_triton_modules():
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "triton" in _imported_roots(p)
        and not (p.relative_to(PACKAGE).parts[0] == "kernels" and p.name.startswith("_triton"))
    ]
    assert offenders == []


def test_rule_checker_sees_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import ray.data\nfrom triton import language as tl\n")
    assert {"ray", "triton"} <= _imported_roots(probe)


def test_package_import_loads_neither():
    code = (
        "import sys, degtrans, degtrans.config, degtrans.calibrate; "
        "print('ray' in sys.modules, 'triton' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
