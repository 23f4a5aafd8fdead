"""`orch plan --measure N`: a short real run of the job, and the whole job's time predicted from
what it measured.

The measurement is ``orch submit`` of the job itself (the same controller, Ray, Ray Train and
DeepSpeed workers, eval backend, eval parts and tracker as a real submission: the job's own
resources), changed only where a short run must be: ``training.max_steps = N`` (``epochs``
unset), one checkpoint at step N, train metrics reported at the job's ``log_every`` when N is at
least twice that, else every N // 2 steps (``cadence``: timestamps at step k and step N), no
``resume_from``, ``tracking.mode = "offline"`` for an online job (no run appears in the
project), and a run directory of its own under the job's ``runs_dir`` (the same filesystem the
job's checkpoints go to), removed afterwards (kept when the measurement fails).

From that run's files (logs/train_events.jsonl, logs/train_metrics.jsonl, the checkpoint's
COMPLETE, the ledger, the eval parts' timings, ledger/published.json) and its launch and exit
times come the figures of ``Measured``; ``predict`` lays the job's steps, checkpoints and eval
rounds on that timeline. Every assumption it makes is returned with the prediction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tomli_w

from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.errors import OrchError, SpecError
from orchestrator.contract.layout import RunDir, read_jsonl
from orchestrator.contract.spec import JobSpec, load_spec

logger = logging.getLogger("orch.measure")

RUN_NAME = "measure"
STOP_WAIT_S = 60.0


class MeasurementFailed(OrchError):
    """The measurement run did not finish, or left files the figures cannot be read from."""


@dataclass(frozen=True)
class Measured:
    """What one short run of the job took (seconds, wall clock)."""

    steps: int
    """N: optimiser steps of the measurement run."""
    wall_s: float
    """Launch of ``orch submit`` to its exit."""
    startup_s: float
    """Launch to the training loop's start (imports, pre-flight, Ray, workers, model, DeepSpeed)."""
    first_step_s: float
    """The first step with the warm-up's whole excess (the first batches, the allocator, ...):
    the loop's start to the end of step k (``cadence``, about N / 2), less k - 1 steady steps."""
    step_s: float
    """One steady step: (end of step N - end of step k) / (N - k); step 1's time when N = 1."""
    checkpoint_s: float
    """End of step N to its checkpoint's COMPLETE marker (DeepSpeed state, HF export, digest)."""
    ckpt_eval_s: float | None
    """The checkpoint's COMPLETE to its merged eval published (None: during_training off)."""
    eval_cold_s: float
    """What the first eval of a run pays once beyond a later one: its first part's wait for a
    worker and model load, less the final eval's (0 without a final eval to compare with)."""
    ckpt_eval_task_s: float
    """The checkpoint's parts' own time (load and evaluate, from their timings), summed."""
    final_eval_s: float | None
    """The final full eval: its first part's submission to its last part's end (None: off)."""
    final_eval_task_s: float
    """The final eval's parts' own time, summed."""
    after_evals_s: float
    """The later of the checkpoint's COMPLETE and its eval's publication, to the exit: the final
    full eval, the export, the tracker's and Ray's shutdown."""
    run_dir: str
    """Where the measurement ran (removed after it)."""

    @property
    def ckpt_eval_warm_s(self) -> float | None:
        """A checkpoint eval after the first (the eval worker already started)."""
        if self.ckpt_eval_s is None:
            return None
        return max(self.ckpt_eval_s - self.eval_cold_s, 0.0)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ckpt_eval_warm_s": self.ckpt_eval_warm_s}


def check_measure_steps(n: int, job_steps: int | None = None) -> None:
    """Refuse a measurement of no steps, or (``job_steps`` known) of the whole job."""
    if n < 1:
        raise OrchError(f"--measure: {n} is not a number of steps (give N >= 1, e.g. --measure 20)")
    if job_steps is not None and n >= job_steps:
        raise OrchError(
            f"--measure: {n} steps are not fewer than the job's {job_steps}: the measurement "
            "would be the whole run; give fewer steps, or submit the job"
        )


def cadence(n: int, log_every: int) -> tuple[int, int]:
    """(log_every of the measurement, k): train-metrics rows (timestamps) at step k, about N / 2,
    and at step N, with reports at the job's own ``log_every`` between them where N allows (the
    warm-up lasts a few steps: the steady step is measured after step k)."""
    if n >= 2 * log_every:
        return log_every, log_every * ((n // 2) // log_every)
    half = max(1, n // 2)
    return half, half


def measurement_spec(spec: JobSpec, n: int, runs_dir: Path) -> JobSpec:
    """The job as the measurement runs it (the module docstring says what changes and why)."""
    tr = spec.training.model_copy(
        update={
            "max_steps": n,
            "epochs": None,
            "checkpoint_every": n,
            "log_every": cadence(n, spec.training.log_every)[0],
            "resume_from": None,
        }
    )
    update: dict[str, Any] = {"training": tr, "runs_dir": runs_dir}
    if spec.tracking.mode == "online":
        update["tracking"] = spec.tracking.model_copy(update={"mode": "offline"})
    return spec.model_copy(update=update)


def measure(spec: JobSpec, n: int, *, dashboard: bool = True) -> Measured:
    """Run the job for ``n`` steps through ``orch submit`` and read its figures."""
    created = not spec.runs_dir.exists()
    spec.runs_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"plan-measure-{spec.name}-", dir=spec.runs_dir))
    job = tmp / "job.toml"
    job.write_text(tomli_w.dumps(measurement_spec(spec, n, tmp).to_toml_dict()))
    try:
        load_spec(job)  # a spec the measurement's `orch submit` would refuse fails here, named
    except SpecError:
        shutil.rmtree(tmp)
        raise
    log = tmp / "submit.log"
    cmd = [sys.executable, "-m", "orchestrator.cli", "submit", str(job), "--run-name", RUN_NAME]
    if not dashboard:
        cmd.append("--no-dashboard")
    logger.info("measuring %d steps of %s: orch submit in %s (log: %s)", n, spec.name, tmp, log)
    try:
        code, t0, t1 = _run(cmd, log)
    except KeyboardInterrupt:
        logger.warning("measurement interrupted; its run directory is left: %s", tmp)
        raise
    run = RunDir(tmp / RUN_NAME)
    if code != 0:
        raise MeasurementFailed(
            f"the measurement run failed (orch submit exited {code}); kept for a look: {tmp} "
            f"(its log: {log}, the run's: {run.controller_log})\n{_tail(log)}"
        )
    try:
        measured = read_figures(spec, run, n, t0, t1)
    except (OSError, KeyError, ValueError, TypeError, StopIteration) as e:
        raise MeasurementFailed(
            f"the measurement run {run.path} finished but its figures cannot be read "
            f"({type(e).__name__}: {e}); kept for a look: {tmp}"
        ) from e
    shutil.rmtree(tmp)
    if created and not any(spec.runs_dir.iterdir()):
        spec.runs_dir.rmdir()  # made for the measurement only
    logger.info("measurement took %.1f s; %s removed", t1 - t0, tmp)
    return measured


def _run(cmd: list[str], log: Path) -> tuple[int, float, float]:
    """``cmd`` in its own session, output to ``log``: (exit code, launch time, exit time). On an
    interrupt it is asked to stop (SIGTERM: the controller checkpoints and exits), then killed;
    whatever of its process group is left at the end is killed."""
    with log.open("w") as out:
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait()
            t1 = time.time()
        except BaseException:
            logger.warning("stopping the measurement run (pid %d)", proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                logger.warning("the measurement run did not stop in %.0f s: killed", STOP_WAIT_S)
            raise
        finally:
            _kill_group(proc.pid)
            proc.wait()
    return code, t0, t1


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # nothing of it left
        os.killpg(pgid, signal.SIGKILL)


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({log}: {e.strerror})"


def read_figures(spec: JobSpec, run: RunDir, n: int, t0: float, t1: float) -> Measured:
    """The figures of a finished measurement run of ``n`` steps launched at ``t0``, exited at
    ``t1`` (time.time())."""
    ev = spec.evaluation
    events = read_jsonl(run.train_events)
    started = next(e for e in events if e["event"] == "started")
    rows = {int(r["step"]): float(r["time"]) for r in read_jsonl(run.train_metrics)}
    ready = float(started["time"])
    k = cadence(n, spec.training.log_every)[1]
    step_s = (rows[n] - rows[k]) / (n - k) if n > 1 else rows[1] - ready
    complete = json.loads((ckpt.checkpoint_dir(run.checkpoints, n) / ckpt.COMPLETE).read_text())
    completed_at = float(complete["time"])
    ckpt_eval_s = None
    evals_end = completed_at
    if ev.during_training:
        published = json.loads(run.published.read_text())["eval_steps"]
        evals_end = max(completed_at, float(published[str(n)]))
        ckpt_eval_s = evals_end - completed_at
    parts = spec.part_names
    ckpt_parts = _parts(run, n, parts) if ev.during_training else []
    final_parts = _parts(run, None, parts) if ev.final_full else []
    eval_cold_s = 0.0
    if ckpt_parts and final_parts:
        eval_cold_s = max(_first_part_cost(ckpt_parts) - _first_part_cost(final_parts), 0.0)
    final_eval_s = None
    if final_parts:
        final_eval_s = max(p["finished_at"] for p in final_parts) - min(
            p["submitted_at"] for p in final_parts
        )
    return Measured(
        steps=n,
        wall_s=t1 - t0,
        startup_s=ready - t0,
        first_step_s=rows[k] - ready - (k - 1) * step_s,
        step_s=step_s,
        checkpoint_s=completed_at - rows[n],
        ckpt_eval_s=ckpt_eval_s,
        eval_cold_s=eval_cold_s,
        ckpt_eval_task_s=sum(p["total_s"] for p in ckpt_parts),
        final_eval_s=final_eval_s,
        final_eval_task_s=sum(p["total_s"] for p in final_parts),
        after_evals_s=t1 - evals_end,
        run_dir=str(run.path.parent),
    )


def _parts(run: RunDir, step: int | None, names: tuple[str, ...]) -> list[dict[str, float]]:
    """Each part's submission (the ledger), start, load and total time (its result's timings)."""
    out = []
    for name in names:
        entry = json.loads(run.ledger(step, name).read_text())
        timings = json.loads(run.part(step, name).read_text())["timings"]
        out.append(
            {
                "submitted_at": float(entry["submitted_at"]),
                "finished_at": float(entry["finished_at"]),
                "started_at": float(timings["started_at"]),
                "load_s": float(timings["load_s"]),
                "total_s": float(timings["total_s"]),
            }
        )
    return out


def _first_part_cost(parts: list[dict[str, float]]) -> float:
    """A round's first part: its wait from submission to start, and its model load."""
    first = min(parts, key=lambda p: p["started_at"])
    return first["started_at"] - first["submitted_at"] + first["load_s"]


def eval_lanes(spec: JobSpec) -> int:
    """Checkpoint evals that run at once: max_concurrent eval tasks, one per checkpoint with
    group_parts, else one per part."""
    ev = spec.evaluation
    tasks = 1 if ev.group_parts else len(spec.part_names)
    return max(1, ev.max_concurrent // tasks)


def predict(m: Measured, spec: JobSpec, steps: int) -> dict[str, Any]:
    """The job's wall time and GPU-hours for ``steps`` steps, from the measured figures.

    Step k ends at start-up + first step + (k - 1) x step + (checkpoints before it) x checkpoint;
    checkpoint evals queue on ``eval_lanes`` lanes from their checkpoint's end (the first at its
    measured time, later ones less the cold start); the run ends the measured ``after_evals_s``
    after the later of the last checkpoint and the last checkpoint eval. With ``steps`` equal to
    the measurement's N (and checkpoint_every N) this is the measured wall time."""
    tr, ev = spec.training, spec.evaluation
    checkpoints = tr.checkpoint_steps(steps)
    ready = m.startup_s + m.first_step_s
    ends = [
        ready + (s - 1) * m.step_s + (k + 1) * m.checkpoint_s for k, s in enumerate(checkpoints)
    ]
    train_s = ends[-1]
    evals_end, waited, ckpt_evals_s = train_s, 0.0, 0.0
    if ev.during_training and m.ckpt_eval_s is not None and m.ckpt_eval_warm_s is not None:
        lanes = [0.0] * eval_lanes(spec)
        for k, end in enumerate(ends):
            took = m.ckpt_eval_s if k == 0 else m.ckpt_eval_warm_s
            lane = min(range(len(lanes)), key=lanes.__getitem__)
            start = max(end, lanes[lane])
            waited += start - end
            lanes[lane] = start + took
            ckpt_evals_s += took
        evals_end = max(train_s, *lanes)
    wall_s = evals_end + m.after_evals_s
    eval_task_s = (len(checkpoints) * m.ckpt_eval_task_s if ev.during_training else 0.0) + (
        m.final_eval_task_s if ev.final_full else 0.0
    )
    train_gpus = tr.num_workers if tr.use_gpu else 0
    train_gpu_hours = train_s * train_gpus / 3600
    eval_gpu_hours = eval_task_s * ev.gpus_per_part / 3600
    return {
        "steps": steps,
        "checkpoints": len(checkpoints),
        "wall_s": wall_s,
        "startup_s": m.startup_s,
        "first_step_s": m.first_step_s,
        "steps_s": (steps - 1) * m.step_s,
        "checkpoints_s": len(checkpoints) * m.checkpoint_s,
        "train_s": train_s,
        "ckpt_evals_s": ckpt_evals_s,
        "ckpt_eval_wait_s": waited,
        "after_training_s": wall_s - train_s,
        "eval_task_s": eval_task_s,
        "train_gpu_hours": train_gpu_hours,
        "eval_gpu_hours": eval_gpu_hours,
        "gpu_hours": train_gpu_hours + eval_gpu_hours,
    }


def assumptions(spec: JobSpec, m: Measured, dashboard: bool) -> list[str]:
    """Every assumption of ``predict`` (and of the measurement), as a person reads them."""
    tr, ev = spec.training, spec.evaluation
    every, k = cadence(m.steps, tr.log_every)
    out = [
        f"measured: one `orch submit` of this job here (the local controller, "
        f"{'with' if dashboard else 'without'} the Ray dashboard, the job's own backend and "
        f"resources) with training.max_steps={m.steps}, checkpoint_every={m.steps}, "
        f"log_every={every} (the job's: {tr.log_every}); its run directory was removed",
        "start-up (launch to the training loop) and the first step's warm-up are paid once, as "
        "measured",
        "every later step takes the measured steady step time"
        + (
            " (N = 1: the first step's, warm-up included, an overestimate)"
            if m.steps == 1
            else f" (steps {k + 1}..{m.steps}; the first {k} steps' excess over it counted once"
            + (
                ")"
                if every == tr.log_every
                else f"; metrics reported every {every} steps, the job every {tr.log_every})"
            )
        ),
        "every checkpoint costs the loop what the measured one did (retention's removals are "
        "not counted)",
    ]
    if ev.during_training:
        out += [
            "the first checkpoint's eval takes what the measured one did, later ones that less "
            f"the cold start seen ({m.eval_cold_s:.2f} s: its first part's wait and model load "
            "beyond the final eval's)",
            f"checkpoint evals queue on {eval_lanes(spec)} lane(s) (evaluation.max_concurrent "
            f"{ev.max_concurrent}, group_parts {str(ev.group_parts).lower()}) and do not slow "
            "training (on CPUs shared with training they do: an underestimate)",
        ]
    out.append(
        "after the last checkpoint"
        + ("'s eval" if ev.during_training else "")
        + " the run takes what the measured one did: "
        + ("the final full eval of the best checkpoint, " if ev.final_full else "")
        + "the export, the tracker's and Ray's shutdown (none depends on the number of steps)"
    )
    if spec.training.resume_from is not None:
        out.append("training.resume_from: not measured (the measurement starts from the model)")
    if spec.tracking.mode == "online":
        out.append("tracking: measured offline (no run appears in the project)")
    out.append(
        "GPU-hours: training's workers hold their GPUs from launch to the last checkpoint; each "
        "eval part holds evaluation.gpus_per_part for its load and evaluation"
    )
    return out
