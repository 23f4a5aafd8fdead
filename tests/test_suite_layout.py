"""Test modules share code through tests/helpers (and fixtures through conftest.py), never by
importing one another: importing a test module runs its module-level code and, under pytest,
can collect its tests twice."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.paths import ROOT


def imported_test_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n for n in names if n == "tests.conftest" or n.startswith("tests.test_")]


def offenders(tests: Path) -> dict[str, list[str]]:
    found = {}
    for path in sorted(tests.rglob("*.py")):
        if imported := imported_test_modules(path):
            found[path.relative_to(tests).as_posix()] = imported
    return found


def test_no_test_module_imports_another() -> None:
    assert offenders(ROOT / "tests") == {}


def test_the_check_finds_such_an_import(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text("from tests.test_b import helper\nimport tests.conftest\n")
    (tmp_path / "test_b.py").write_text("from tests.helpers.jobs import demo_job\n")
    assert offenders(tmp_path) == {"test_a.py": ["tests.test_b", "tests.conftest"]}
