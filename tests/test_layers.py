"""The layer rule of docs/ARCHITECTURE.md, checked on the source: a package imports only packages below it.

utils (ground) -> data and models (independent of each other) -> engine -> top-level scripts and bench.
Every import counts, also those inside functions (they hide dependencies from a reader, not from this).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("utils", "data", "models", "engine")
SCRIPTS = tuple(p.stem for p in REPO.glob("*.py"))
ALLOWED = {
    "utils": {"utils"},
    "data": {"utils", "data"},
    "models": {"utils", "models"},
    "engine": {"utils", "data", "models", "engine"},
}
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    files += [REPO / f"{name}.py" for name in SCRIPTS] + sorted((REPO / "bench").glob("*.py"))
    return sorted(files)


def _our_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level name) of every import of one of our packages or scripts in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in (*PACKAGES, *SCRIPTS)]
    return found


def layer_violations(files: list[Path], root: Path = REPO) -> list[str]:
    """'file:line imports X' for every import against the layer rule (paths relative to ``root``)."""
    bad = []
    for path in files:
        rel = path.relative_to(root)
        layer = rel.parts[0] if len(rel.parts) > 1 else None
        if layer not in ALLOWED:
            continue  # top-level scripts and bench may import every package
        imports = _our_imports(path)
        bad += [f"{rel}:{line} imports {name}" for line, name in imports if name not in ALLOWED[layer]]
    return bad


def test_every_module_obeys_the_layer_rule() -> None:
    assert layer_violations(_modules()) == []


def test_scripts_do_not_import_each_other() -> None:
    for name in SCRIPTS:
        path = REPO / f"{name}.py"
        assert [n for _, n in _our_imports(path) if n in SCRIPTS] == [], path.name


def test_the_check_finds_a_hidden_upward_import(tmp_path: Path) -> None:
    """The checker itself: a function-level import of engine from utils is reported with its line."""
    fake = tmp_path / "utils" / "_layer_probe.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    import numpy\n\n    from engine.trainer import fit\n    return fit\n")
    assert layer_violations([fake], root=tmp_path) == ["utils/_layer_probe.py:4 imports engine"]


def test_tests_do_not_import_bench() -> None:
    """Harnesses shared by tests and benchmarks live in tests/ (bench/ imports them, not the reverse); only
    the test of bench/gpu_check.py imports the script it tests."""
    importers = []
    for path in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n.split(".")[0] == "bench" for n in names):
                importers.append(path.name)
    assert sorted(set(importers)) == ["test_gpu_check.py"]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_function_is_longer_than_80_lines(path: Path) -> None:
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []
