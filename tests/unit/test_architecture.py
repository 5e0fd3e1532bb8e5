"""The shape of the package (docs/architecture.md), checked where the code is read, not where it runs:

- the layer contract and the no-cycle contract of pyproject.toml (``[tool.importlinter]``) hold, with no
  exception listed;
- the commands never import each other;
- imports sit at the top of the module, except those of the heavy optional packages (ruff PLC0415 and
  TID253 with pyproject's ``[tool.ruff]``);
- no module, test or script imports a top-level ``kernels``, ``probes``, ``calibrate``, ``plan`` or
  ``profiles``: those are ``gpucal.kernels`` …, and from the repository root such a name imports nothing.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
PACKAGES = ("kernels", "probes", "calibrate", "plan", "profiles")
SOURCES = ("src", "tests", "bench")


def _contracts() -> list[dict]:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]


def _lint_imports(config: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    assert exe, "lint-imports (import-linter, in the test extra) is not installed"
    return subprocess.run([exe, "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_import_contracts_hold():
    done = _lint_imports(PYPROJECT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout, done.stdout[-2000:]


def test_the_contracts_list_no_exception():
    for contract in _contracts():
        assert not contract.get("ignore_imports"), f"{contract['name']}: an exception is listed"
        assert not contract.get("exhaustive_ignores"), f"{contract['name']}: a module is left out"
    kinds = {c["type"] for c in _contracts()}
    assert {"layers", "acyclic_siblings"} <= kinds


def test_the_layer_contract_catches_an_import_up_the_stack(tmp_path):
    """The contract is not decorative: a copy of the package with one module importing up the stack (the
    planner reading a probe) breaks it."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "gpucal", copy / "gpucal", ignore=shutil.ignore_patterns("__pycache__"))
    spec = copy / "gpucal" / "plan" / "spec.py"
    spec.write_text(spec.read_text() + "\nimport gpucal.probes.timing  # noqa\n")
    config = tmp_path / "pyproject.toml"
    config.write_text(PYPROJECT.read_text())
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run([exe, "--config", str(config), "--no-cache"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, check=False, env=env)
    assert done.returncode != 0 and "gpucal.plan.spec -> gpucal.probes.timing" in done.stdout, done.stdout[-3000:]


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("gpucal")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_module_is_in_an_import_cycle():
    """Module by module, imports inside functions included: no cycle at all (a package's ``__init__``
    that re-exports its modules is the package, and counts)."""
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = _graph()
    graph.add_import(importer="gpucal.units", imported="gpucal.plan.spec")
    graph.add_import(importer="gpucal.plan.spec", imported="gpucal.units")
    assert ["gpucal.plan.spec", "gpucal.units"] in _cycles(graph)


def _commands(graph: grimp.ImportGraph) -> set[str]:
    return {m for m in graph.find_children("gpucal.commands") if m != "gpucal.commands.options"}


def test_no_command_imports_another():
    graph = _graph()
    commands = _commands(graph)
    assert len(commands) >= 8
    for command in sorted(commands):
        for other in sorted(commands - {command}):
            chain = graph.find_shortest_chain(importer=command, imported=other)
            assert chain is None, f"{command} imports {other}: {' -> '.join(chain)}"


def test_plan_imports_nothing_of_the_stack():
    graph = _graph()
    allowed = {"gpucal", "gpucal.limits", "gpucal.units", "gpucal.errors"}
    for module in sorted(graph.find_descendants("gpucal.plan") | {"gpucal.plan"}):
        outside = {m for m in graph.find_modules_directly_imported_by(module)
                   if m.startswith("gpucal") and not m.startswith("gpucal.plan")}
        assert outside <= allowed, f"{module} imports {sorted(outside - allowed)}"


def test_imports_sit_at_the_top_except_the_heavy_packages():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(PYPROJECT),
                           "src", "bench"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_import_rule_catches_a_local_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import json\n    return json\n\n\nimport cupy\n")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(PYPROJECT),
                           str(bad)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and "PLC0415" in done.stdout and "TID253" in done.stdout, done.stdout


def _bare_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {name}" for name in names
                  if name.split(".")[0] in PACKAGES]
    return found


def test_nothing_imports_a_bare_top_level_package():
    files = [p for top in SOURCES for p in (ROOT / top).rglob("*.py")]
    assert len(files) > 100
    found = [hit for path in files for hit in _bare_imports(path)]
    assert found == []


def test_the_bare_import_scan_sees_one(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "x.py").write_text("import probes.links\nfrom kernels import links\nfrom gpucal import plan\n")
    assert _bare_imports(tmp_path / "x.py") == ["x.py:1: probes.links", "x.py:2: kernels"]


@pytest.mark.parametrize("name", PACKAGES)
def test_from_the_root_a_bare_package_name_imports_nothing(name):
    """Python run from the repository root finds no ``kernels`` (…) there: one file, one module."""
    done = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr


# How a profile was read before the model: the document's dict (``doc.data[...]``, ``.data.get(...)``) and a
# quantity's value by key. Only the model and the I/O beneath it touch the dict.
DICT_READS = ('.data[', '.data.get(', '["value"]', ".get(\"value\")", "['value']")
DICT_OWNERS = ("src/gpucal/profiles/io.py", "src/gpucal/profiles/model/")
# Not profile data: the summary rows of ``calibrate.health.summary_rows`` (the rows ``calibrate --json`` prints,
# whose median is the key "value"), read as ``r["value"]`` where they are condensed into the table.
# calibrate's summary rows (``calibrate.health.summary_rows``, condensed there, printed by calibrate and drawn by the
# report) carry a key ``value``: they are not profile data
NOT_PROFILE_DATA = {path: 'r["value"]' for path in ("src/gpucal/commands/calibrate/outputs.py",
                                                     "src/gpucal/calibrate/health.py",
                                                     "src/gpucal/figures/report.py")}


def _dict_reads(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    if rel.startswith(DICT_OWNERS):
        return []
    own = NOT_PROFILE_DATA.get(rel)
    return [f"{rel}:{number}: {line.strip()}" for number, line in enumerate(path.read_text().splitlines(), 1)
            if any(pattern in (line.replace(own, "") if own else line) for pattern in DICT_READS)]


def test_no_module_reads_a_profile_through_dict_paths():
    files = sorted((ROOT / "src" / "gpucal").rglob("*.py"))
    assert [hit for path in files for hit in _dict_reads(path)] == []


def test_the_dict_read_scan_sees_one(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "x.py").write_text('bw = doc.data["devices"][0]["memory_bandwidth_Bps"]["value"]\nok = 1\n')
    assert _dict_reads(tmp_path / "x.py") == ['x.py:1: bw = doc.data["devices"][0]["memory_bandwidth_Bps"]["value"]']
