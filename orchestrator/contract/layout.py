"""The run directory: a public interface, laid out in one place.

runs/<run>/
  spec.toml / spec.json              the resolved spec (overrides applied, absolute paths)
  checkpoints/step_000500/...         see orchestrator/contract/checkpoint.py
  eval/step_000500/<dataset>.json     one result part per (step, dataset)
  eval/step_000500.json               the merged step
  eval/final/<dataset>.json           parts of the full eval of the best checkpoint
  eval/final.json                     merged full eval
  ledger/<step_000500|final>/<dataset>.json   each eval part's state and attempts
  best.json                           the best checkpoint so far
  logs/controller.log, logs/train_metrics.jsonl, logs/eval/...
  wandb/
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.contract import checkpoint
from orchestrator.contract.atomic import atomic_write_json, atomic_write_text
from orchestrator.contract.errors import RunDirError

if TYPE_CHECKING:
    from orchestrator.contract.spec import JobSpec

FINAL = "final"


def part_key(step: int | None) -> str:
    """The folder name of a step's eval parts: step_000500, or final for the full eval."""
    return FINAL if step is None else f"step_{step:06d}"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def spec_toml(self) -> Path:
        return self.path / "spec.toml"

    @property
    def spec_json(self) -> Path:
        return self.path / "spec.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def ledger_dir(self) -> Path:
        return self.path / "ledger"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def train_metrics(self) -> Path:
        """Written by the training loop (rank 0): one JSON line per report."""
        return self.logs / "train_metrics.jsonl"

    @property
    def train_events(self) -> Path:
        """Written by the training loop (rank 0): starts, restarts, checkpoints, the end."""
        return self.logs / "train_events.jsonl"

    @property
    def retention_log(self) -> Path:
        """Written by the controller: each checkpoint (or checkpoint state) retention removed."""
        return self.logs / "retention.jsonl"

    @property
    def forensics(self) -> Path:
        """Written by the training loop: what was in a batch whose loss was not finite."""
        return self.logs / "forensics"

    @property
    def control(self) -> Path:
        return self.path / "control"

    @property
    def preempt_request(self) -> Path:
        """Written by the controller on SLURM's USR1/SIGTERM; the training loop checkpoints and
        stops when it sees it."""
        return self.control / "preempt"

    @property
    def controller_log(self) -> Path:
        return self.logs / "controller.log"

    @property
    def controller_end(self) -> Path:
        """How the last controller of the run ended ({"exit", "reason", "time"}); removed when
        a controller starts on the run."""
        return self.logs / "controller_end.json"

    @property
    def processes(self) -> Path:
        """The processes the controller started (reaped by the next controller of the run)."""
        return self.logs / "processes.json"

    @property
    def export_best(self) -> Path:
        return self.path / "export" / "best"

    @property
    def slurm_dir(self) -> Path:
        """--cluster slurm: train.sbatch, job.json, <jobid>.log."""
        return self.path / "slurm"

    @property
    def slurm_eval_logs(self) -> Path:
        """submitit's folders of eval parts run as SLURM jobs."""
        return self.logs / "slurm"

    @property
    def ray_job(self) -> Path:
        """--address: the Jobs API address and submission id."""
        return self.path / "ray_job.json"

    @property
    def imports(self) -> Path:
        """Imported lmms-eval task results, eval/imports/step_000500/<task>.json."""
        return self.eval_dir / "imports"

    def ondemand(self, step: int, full: bool) -> Path:
        """`orch eval`'s parts and merged result for one checkpoint."""
        return self.eval_dir / "ondemand" / f"step_{step:06d}-{'full' if full else 'partial'}"

    @property
    def published(self) -> Path:
        """What the controller has published to the tracker (train offset, steps, final)."""
        return self.ledger_dir / "published.json"

    @property
    def best(self) -> Path:
        return self.path / "best.json"

    @property
    def final(self) -> Path:
        return self.eval_dir / f"{FINAL}.json"

    @property
    def wandb_dir(self) -> Path:
        return self.path / "wandb"

    def part(self, step: int | None, dataset: str) -> Path:
        return self.eval_dir / part_key(step) / f"{dataset}.json"

    def merged(self, step: int | None) -> Path:
        return self.eval_dir / f"{part_key(step)}.json"

    def ledger(self, step: int | None, dataset: str) -> Path:
        return self.ledger_dir / part_key(step) / f"{dataset}.json"

    def eval_log(self, step: int | None, dataset: str, attempt: int) -> Path:
        return self.logs / "eval" / part_key(step) / f"{dataset}.attempt{attempt}.log"

    def read_spec(self) -> JobSpec:
        """The run's resolved spec, as it was when the run was created (its plugins loaded)."""
        from orchestrator.contract.spec import read_resolved_spec

        return read_resolved_spec(self.spec_json)

    def complete_checkpoints(self) -> dict[int, Path]:
        return checkpoint.complete_checkpoints(self.checkpoints)

    def create(self, spec_toml: str, spec_json: dict[str, object]) -> None:
        for d in (self.checkpoints, self.eval_dir, self.ledger_dir, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.spec_toml, spec_toml)
        atomic_write_json(self.spec_json, spec_json)


def index_root(runs_dir: Path) -> Path:
    """Where the rows of a job's manifests are indexed (workers/data/index.py), beside its runs:
    a folder without spec.json, so never taken for a run."""
    return Path(runs_dir) / ".index"


def new_run_name(job_name: str) -> str:
    return f"{job_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def find_run(runs_dir: Path, name: str | None) -> RunDir:
    """The named run, or the most recently created run when name is None."""
    if name is not None:
        candidate = Path(name)
        path = (
            candidate
            if candidate.is_dir() and (candidate / "spec.json").exists()
            else runs_dir / name
        )
        if not (path / "spec.json").is_file():
            raise RunDirError(f"no run {name!r} under {runs_dir} (expected {path}/spec.json)")
        return RunDir(path)
    runs = (
        [p for p in runs_dir.iterdir() if (p / "spec.json").is_file()] if runs_dir.is_dir() else []
    )
    if not runs:
        raise RunDirError(f"no runs under {runs_dir}; start one with `orch submit JOB.toml`")
    return RunDir(max(runs, key=lambda p: (p / "spec.json").stat().st_mtime))


def read_json_or_none(path: Path) -> dict[str, Any] | None:
    """A result-like JSON file, or None if absent. A malformed file is an error, never skipped."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: not valid JSON ({e}); it was not written by orch") from e
    if not isinstance(value, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return value


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one record (stamped with ``time``) to a JSON-lines channel: one line, written with
    a single write call and fsynced, so that a reader never takes half a line for a record
    (``read_jsonl`` and the controller only consume lines that end with a newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({**row, "time": time.time()}) + "\n"
    with path.open("a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete records of a JSON-lines channel the training loop appends to (train events,
    train metrics); [] if absent. Only lines that end with a newline count: the writer appends
    each record with one write, so a reader may see the last one half written."""
    if not path.is_file():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    try:
        return [json.loads(line) for line in complete.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: a line is not valid JSON ({e}); not written by orch") from e
