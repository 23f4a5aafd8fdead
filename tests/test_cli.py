"""The `orch` parser: every verb has its module, its --help, and dispatches to its run()."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]

# verb -> (module name, the least argv that parses)
VERBS: dict[str, tuple[str, list[str]]] = {
    "submit": ("submit", ["job.toml"]),
    "resume": ("resume", ["run"]),
    "cancel": ("cancel", ["run"]),
    "validate": ("validate", ["job.toml"]),
    "plan": ("plan", ["job.toml"]),
    "doctor": ("doctor", ["job.toml"]),
    "results": ("results", []),
    "eval": ("eval", ["run"]),
    "import-lmms": ("import_lmms", ["run", "r.json", "--step", "10"]),
    "status": ("status", []),
    "logs": ("logs", []),
    "data": ("data", ["demo"]),
    "model": ("model", ["tiny", "--out", "m"]),
    "export": ("export", ["run", "--out", "o"]),
}


def test_every_verb_is_listed_in_order() -> None:
    assert [v.__name__.rsplit(".", 1)[1] for v in cli.VERBS] == [m for m, _ in VERBS.values()]


@pytest.mark.parametrize("verb", VERBS)
def test_parser_dispatches_each_verb_to_its_module(verb: str) -> None:
    module, argv = VERBS[verb]
    args = build_parser().parse_args([verb, *argv])
    assert args.command == verb
    assert args.func.__module__ == f"orchestrator.cli.{module}"
    assert args.func.__name__ == "run"


@pytest.mark.parametrize(
    "argv", [[], *([v] for v in VERBS), ["data", "demo"], ["data", "prepare"], ["model", "tiny"]]
)
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*argv, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {' '.join(['orch', *argv])}")


def test_an_orch_error_is_exit_2_with_its_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert f"ERROR orch: no run 'nope' under {tmp_path}" in capsys.readouterr().err


def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("usage: orch")
