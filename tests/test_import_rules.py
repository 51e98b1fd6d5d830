"""House rules on imports, checked on the source with ``ast`` (module-level and function-level alike).

* ray is imported only in ``degtrans/cluster/``, triton only in ``degtrans/kernels/**/_triton*.py``.
* The package is layered (``LAYERS``, bottom first); a module imports only from its own unit or from
  a lower layer:

  - ``degtrans/__init__.py`` (the version only), then ``kernels`` (torch only);
  - the shared contracts: ``atomic``, ``config``, ``field``, ``io``, ``pairs``, ``metrics``, ``figures``,
    ``report``; they may import one another (no cycle), never a stage;
  - ``calibrate`` and ``simulate``: siblings, neither imports the other;
  - ``restore``;
  - ``testing`` (fixtures for tests, benchmarks and the demo: toy datasets, synthetic fields): it may
    use every stage, and only ``cluster`` and above may import it, so no stage depends on a fixture;
  - ``cluster`` (the only place that imports ray), ``demo``, ``cli``, ``__main__``.

  A unit is ``degtrans.<name>`` (a subpackage or a top-level module). There is no cycle between units.
* There is no cycle between modules either, inside a unit included (``from . import x`` of a submodule
  imports that submodule only; importing ``P.x`` does not import ``P``'s ``__init__`` for this rule).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "degtrans"

ROOT = "__init__"  # degtrans/__init__.py
FOUNDATION = {"atomic", "errors", "config", "field", "io", "pairs", "metrics", "figures", "report"}
STAGES = {"calibrate", "simulate"}
LAYERS: list[set[str]] = [
    {ROOT},
    {"kernels"},
    FOUNDATION,
    STAGES,
    {"restore"},
    {"testing"},
    {"cluster"},
    {"demo"},
    {"cli"},
    {"__main__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
# Imports within a layer: allowed among the foundation (the cycle test keeps them acyclic), never
# between the sibling stages.
SAME_LAYER_OK = FOUNDATION

# Known violations in files another change is rewriting (issue 10); each entry names the file and the
# import, and goes when that file no longer needs it.
ALLOWED: set[tuple[str, str]] = set()


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


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _unit(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _target_unit(module: str) -> str | None:
    """``degtrans.X.y`` -> ``X``; ``degtrans`` -> the root; anything else -> ``None``."""
    parts = module.split(".")
    if parts[0] != "degtrans":
        return None
    return parts[1] if len(parts) > 1 else ROOT


def _is_module(name: str) -> bool:
    """Whether ``degtrans....`` names a module or a package of the source tree."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imported_modules(path: Path) -> set[str]:
    """The ``degtrans`` modules that ``path`` imports anywhere: ``import``, ``from ... import`` (also
    relative and inside functions) and ``importlib.import_module("degtrans....")`` with a literal.

    ``from P import x`` imports the submodule ``P.x`` when there is one, else ``P`` itself; importing
    ``P.x`` does not count as importing ``P`` (its ``__init__``).
    """
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            modules = [
                f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base for alias in node.names
            ]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            modules = [node.args[0].value]
        found.update(m for m in modules if m.split(".")[0] == "degtrans")
    return found


def _degtrans_imports(path: Path) -> set[str]:
    """The units of ``degtrans`` that ``path`` imports anywhere (see :func:`_imported_modules`)."""
    units = set()
    for module in _imported_modules(path):
        unit = _target_unit(module)
        # ``from degtrans import __version__`` names no unit: it is the root's.
        is_unit = (PACKAGE / unit).is_dir() or (PACKAGE / f"{unit}.py").exists()
        units.add(unit if is_unit else ROOT)
    return units


def _import_graph() -> dict[str, dict[str, set[str]]]:
    """``{unit: {imported unit: {files}}}`` over the whole package, imports within a unit left out."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _unit(path)
        graph.setdefault(source, {})
        for target in _degtrans_imports(path) - {source}:
            graph[source].setdefault(target, set()).add(str(path.relative_to(PACKAGE)))
    return graph


def test_every_unit_has_a_layer():
    missing = sorted(set(_import_graph()) - set(RANK))
    assert missing == [], f"give these units a layer in LAYERS: {missing}"


def test_no_upward_or_sibling_import():
    offenders = []
    for source, targets in _import_graph().items():
        for target, files in targets.items():
            up = RANK[target] > RANK[source]
            sideways = RANK[target] == RANK[source] and source not in SAME_LAYER_OK
            offenders += [
                f"{f} imports degtrans.{target} ({source} -> {target})"
                for f in sorted(files)
                if (up or sideways) and (f, target) not in ALLOWED
            ]
    assert offenders == []


def test_allow_list_entries_are_still_needed():
    graph = _import_graph()
    stale = [(f, t) for f, t in ALLOWED if f not in graph.get(f.split("/")[0], {}).get(t, set())]
    assert stale == [], f"remove from ALLOWED: {stale}"


def test_no_import_cycle_between_units():
    graph = {unit: set(targets) for unit, targets in _import_graph().items()}
    state: dict[str, str] = {}

    def visit(unit: str, trail: list[str]) -> list[str] | None:
        state[unit] = "open"
        for target in sorted(graph.get(unit, ())):
            if state.get(target) == "open":
                return [*trail, unit, target]
            if target not in state and (cycle := visit(target, [*trail, unit])):
                return cycle
        state[unit] = "done"
        return None

    cycles = [cycle for unit in sorted(graph) if unit not in state and (cycle := visit(unit, []))]
    assert cycles == []


def _module_graph() -> dict[str, set[str]]:
    """``{module: {modules it imports}}`` over the whole package (see :func:`_imported_modules`)."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        graph[module] = {m for m in _imported_modules(path) if m in graph or _is_module(m)} - {module}
    return graph


def _module_cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The import cycles of ``graph``: its strongly connected components of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = set()
            while True:
                top = stack.pop()
                component.add(top)
                if top == module:
                    break
            if len(component) > 1:
                cycles.append(frozenset(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


# Module cycles another change is removing (each entry says which); each goes when that change is merged.
ALLOWED_CYCLES: set[frozenset[str]] = set()


def test_no_import_cycle_between_modules():
    cycles = set(_module_cycles(_module_graph()))
    assert sorted(sorted(c) for c in cycles - ALLOWED_CYCLES) == []
    assert sorted(sorted(c) for c in ALLOWED_CYCLES - cycles) == [], "remove from ALLOWED_CYCLES"


def test_cycle_checker_finds_a_cycle_inside_a_package(tmp_path, monkeypatch):
    package = tmp_path / "degtrans"
    (package / "probe").mkdir(parents=True)
    (package / "__init__.py").touch()
    files = {
        # a -> b (a submodule imported from its package: not the package's __init__) -> c -> a.
        "__init__.py": "from degtrans.probe.c import thing\n",
        "a.py": "from . import b\n",
        "b.py": "def f():\n    import degtrans.probe.c\n",
        "c.py": "from degtrans.probe import a\nthing = 1\n",
        "d.py": "from degtrans.probe import thing\n",  # the package itself: d -> __init__ -> c
    }
    for name, source in files.items():
        (package / "probe" / name).write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    graph = _module_graph()
    assert graph["degtrans.probe.a"] == {"degtrans.probe.b"}
    assert graph["degtrans.probe.d"] == {"degtrans.probe"}
    assert _module_cycles(graph) == [frozenset({"degtrans.probe.a", "degtrans.probe.b", "degtrans.probe.c"})]


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import degtrans.restore.loop\n", {"restore"}),
        ("def f():\n    from degtrans.cluster.session import ensure_ray\n", {"cluster"}),
        ("from degtrans import __version__, config\n", {ROOT, "config"}),
        ("from . import dataset\nfrom ..restore import data\n", {"simulate", "restore"}),
        ("import importlib\nimportlib.import_module('degtrans.demo')\n", {"demo"}),
        ("import numpy\nfrom typing import Any\n", set()),
    ],
)
def test_layer_checker_sees_every_kind_of_import(tmp_path, monkeypatch, source, expected):
    package = tmp_path / "degtrans"
    (package / "simulate").mkdir(parents=True)
    for unit in ("restore", "cluster"):
        (package / unit).mkdir()
    for name in ("config.py", "demo.py", "__init__.py"):
        (package / name).touch()
    probe = package / "simulate" / "probe.py"
    probe.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert _degtrans_imports(probe) == expected
