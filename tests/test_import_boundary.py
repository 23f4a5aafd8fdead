"""The house's import rules, checked on every file by parsing its imports (no import runs):

1. ``orchestrator/contract/`` (the contract both planes share) imports neither plane.
2. ``workers/`` (the data plane) imports nothing of ``orchestrator/`` but the contract.
3. The rest of ``orchestrator/`` (the control plane) imports ``workers/`` only inside the
   functions listed below, each a place where data-plane code runs on purpose, with the reason.
   Dataset kinds and metrics reach the control plane through the contract's registries
   (plugins loaded by name), never by a static import.

A broken rule fails naming the file, the line and the import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (file, function) -> why data-plane code runs there.
ALLOWED: dict[tuple[str, str], str] = {
    ("orchestrator/launch/train_run.py", "RayTrainRun._fit"): "the training entry point",
    ("orchestrator/eval_backends/ray_tasks.py", "_run_part"): "the Ray task body",
    ("orchestrator/eval_backends/ray_tasks.py", "_run_group"): "the grouped Ray task body",
    ("orchestrator/eval_backends/ray_tasks.py", "_warm_up"): "a Ray worker's warm-up import",
    ("orchestrator/eval_backends/slurm_jobs.py", "run_part"): "the SLURM job body",
    ("orchestrator/eval_backends/slurm_jobs.py", "run_group"): "the grouped SLURM job body",
    ("orchestrator/checks/doctor.py", "_build_model"): "doctor's real-batch check",
    ("orchestrator/checks/doctor.py", "check_lmms"): "doctor asks the lmms-eval environment",
    ("orchestrator/cli/data.py", "_demo"): "`orch data demo` builds data here",
    ("orchestrator/cli/data.py", "_prepare"): "`orch data prepare` converts data here",
    ("orchestrator/cli/model.py", "run"): "`orch model tiny` builds a model here",
    ("orchestrator/cli/plan.py", "_shapes"): "`orch plan` encodes sample rows as training does",
    ("orchestrator/checks/validate.py", "_index"): "the pre-flight indexes the rows training reads",
}


def imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, imported module, enclosing function's qualified name or None) of every import."""
    tree = ast.parse(path.read_text(), str(path))

    def walk(
        node: ast.AST, scope: list[str], in_function: bool
    ) -> Iterator[tuple[int, str, str | None]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield child.lineno, alias.name, ".".join(scope) if in_function else None
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                yield child.lineno, child.module, ".".join(scope) if in_function else None
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from walk(child, [*scope, child.name], True)
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, [*scope, child.name], in_function)
            else:
                yield from walk(child, scope, in_function)

    yield from walk(tree, [], False)


def top(module: str) -> str:
    return module.split(".")[0]


def violations(root: Path = ROOT) -> list[str]:
    found: list[str] = []
    for path in sorted([*root.glob("orchestrator/**/*.py"), *root.glob("workers/**/*.py")]):
        rel = path.relative_to(root).as_posix()
        contract = rel.startswith("orchestrator/contract/")
        for line, module, function in imports(path):
            where = f"{rel}:{line}: import {module}"
            in_contract = module == "orchestrator.contract" or module.startswith(
                "orchestrator.contract."
            )
            if contract and top(module) in ("orchestrator", "workers") and not in_contract:
                found.append(f"{where} (the contract imports neither plane)")
            elif rel.startswith("workers/") and top(module) == "orchestrator" and not in_contract:
                found.append(f"{where} (workers/ imports only orchestrator.contract)")
            elif rel.startswith("orchestrator/") and not contract and top(module) == "workers":
                if function is None:
                    found.append(f"{where} (at module level: import workers/ inside a function)")
                elif (rel, function) not in ALLOWED:
                    found.append(
                        f"{where} in {function}() (not a place where data-plane code runs; "
                        "go through the contract's registries, or add it to ALLOWED with why)"
                    )
    return found


def test_the_planes_meet_only_through_the_contract() -> None:
    assert violations() == []


def test_the_check_finds_a_broken_rule(tmp_path: Path) -> None:
    """The checker itself, on a copy of the tree with three planted breaks (so the test above
    cannot pass by finding nothing)."""
    import shutil

    for package in ("orchestrator", "workers"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    (tmp_path / "orchestrator" / "core" / "planted.py").write_text(
        "import json\n\nfrom workers.train import train_loop_per_worker\n\n\n"
        "def f() -> None:\n    import workers.evaluate\n"
    )
    (tmp_path / "workers" / "planted.py").write_text("from orchestrator.core import merge\n")
    (tmp_path / "orchestrator" / "contract" / "planted.py").write_text("import workers.train\n")
    assert violations(tmp_path) == [
        "orchestrator/contract/planted.py:1: import workers.train "
        "(the contract imports neither plane)",
        "orchestrator/core/planted.py:3: import workers.train "
        "(at module level: import workers/ inside a function)",
        "orchestrator/core/planted.py:7: import workers.evaluate in f() (not a place where "
        "data-plane code runs; go through the contract's registries, or add it to ALLOWED "
        "with why)",
        "workers/planted.py:1: import orchestrator.core (workers/ imports only "
        "orchestrator.contract)",
    ]


def test_every_allowed_place_exists() -> None:
    """No stale entry: each allowed function still imports workers/."""
    seen = set()
    for rel, _ in ALLOWED:
        for _, module, function in imports(ROOT / rel):
            if top(module) == "workers" and function is not None:
                seen.add((rel, function))
    assert set(ALLOWED) - seen == set()


def test_loading_a_spec_imports_no_data_plane_dependency() -> None:
    """The kinds' modules are light: the control plane validates a spec (every built-in kind
    loaded) without importing torch or transformers."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from orchestrator.contract.kinds import known_kinds\n"
        "kinds = known_kinds()\n"
        "assert {'classification', 'vqa'} <= set(kinds), kinds\n"
        "heavy = ('torch', 'transformers', 'deepspeed', 'ray')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
