"""`orch submit`: pre-flight checks, the run directory, Ray, the tracker, then the controller.

The tracker and the eval backend come from their registries (``make_tracker``,
``make_backend``), as they do for ``orch resume``, ``orch eval`` and ``orch import-lmms``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import tomli_w

from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.errors import ClusterError, RunDirError, SpecError
from orchestrator.contract.exitcodes import ExitCode
from orchestrator.contract.layout import RunDir, new_run_name
from orchestrator.contract.spec import JobSpec
from orchestrator.eval_backends import AdoptingBackend, make_backend
from orchestrator.tracking import make_tracker

logger = logging.getLogger("orch.submit")


def preflight(
    spec: JobSpec, sample: int | None = 64, run_path: Path | None = None
) -> dict[str, int]:
    """Check everything that can be checked before compute starts; return train sizes.

    Every manifest row is checked; ``sample`` images per manifest are decoded (None: all, 0:
    none, only their existence). With ``run_path`` (the run directory, existing or not), the
    run's checkpoints must fit on its filesystem (orchestrator/checks/disk.py)."""
    from orchestrator.checks.disk import check_disk
    from orchestrator.checks.validate import validate_data
    from orchestrator.contract.deepspeed import build_deepspeed_config
    from orchestrator.eval_backends import get_backend_class

    resume = spec.training.resume_from
    if resume is not None and not (
        ckpt.resumable(resume) or ckpt.latest_resumable(resume / "checkpoints") is not None
    ):
        weights_only = (resume / ckpt.COMPLETE).is_file() or ckpt.complete_checkpoints(
            resume / "checkpoints"
        )
        raise SpecError(
            f"training.resume_from: {resume} has no resumable checkpoint"
            + (
                " (retention removed the DeepSpeed state, training.keep_last; --init-from "
                "starts a new run from a checkpoint's weights)"
                if weights_only
                else ": it is neither a complete checkpoint nor a run with one"
            )
        )
    if not (spec.model.path / "config.json").is_file():
        raise SpecError(
            f"model.path: {spec.model.path} has no config.json; point it at a local Hugging Face "
            "model directory (`orch model tiny --out models/tiny-qwen2.5-vl` makes a tiny one)"
        )
    build_deepspeed_config(spec.training, spec.training.num_workers)
    get_backend_class(spec.evaluation.backend)  # a backend from the registry, or the known ones
    if spec.evaluation.lmms is not None:
        from orchestrator.checks.doctor import check_lmms

        # Its Python, orch's model class and every task, before any checkpoint needs them.
        for finding in check_lmms(spec):
            if finding.level == "error":
                raise SpecError(f"evaluation.lmms: {finding.message}; {finding.fix}")
    if sample == 0:
        return {}
    steps = spec.training.max_steps
    if run_path is not None and steps is not None:
        # Before the data is read: validating writes the row index under runs_dir.
        check_disk(spec, steps, run_path)
    sizes = {s.name: s.train for s in validate_data(spec, sample)}
    if run_path is not None and steps is None:  # epochs: the steps follow from the rows
        check_disk(spec, spec.training.steps_for(sizes), run_path)
    return sizes


def open_run(spec: JobSpec, run_name: str | None) -> RunDir:
    """Create a new run directory, or reopen an existing one with the same resolved spec."""
    name = run_name or new_run_name(spec.name)
    rundir = RunDir(spec.runs_dir / name)
    resolved = spec.to_toml_dict()
    if rundir.spec_json.is_file():
        stored = rundir.read_spec().to_toml_dict()
        # Where the run executes (the Ray address of this allocation) is not what it computes.
        diff = sorted(d for d in _diff(stored, resolved) if d != "ray_address")
        if diff:
            raise RunDirError(
                f"run {name} exists with a different spec ({', '.join(diff)}); "
                "use a new --run-name, or the same spec to continue this run"
            )
        logger.info("continuing run %s", rundir.path)
        return rundir
    rundir.create(tomli_w.dumps(resolved), resolved)
    logger.info("created run %s", rundir.path)
    return rundir


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in a.keys() | b.keys():
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def lock_run(rundir: RunDir) -> Any:
    """Hold an exclusive lock on the run for this process's lifetime: one controller per run.
    The kernel drops it when the process dies, SIGKILL included, so a resume never waits."""
    import fcntl
    import os

    path = rundir.path / "controller.lock"
    f = path.open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise RunDirError(
            f"run {rundir.name} is being controlled by another orch process ({holder}); "
            "watch it with `orch status`, or stop it before resuming"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    f.flush()
    return f


RAY_START_ATTEMPTS = 3


def init_embedded_ray(cpus: int, dashboard: bool) -> Any:
    """``ray.init`` of an embedded cluster, tried again when its raylet did not register in
    time: Ray 2.60 waits a hard-coded 30 s for that (ray/_private/node.py), which a loaded
    machine can exceed; the attempt's processes are shut down before the next."""
    import ray

    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            return ray.init(
                # "local": always a new cluster of this run's own. Without an address, ray.init
                # joins whatever cluster `ray start` last started on this machine.
                address="local",
                num_cpus=cpus,
                include_dashboard=dashboard,
                dashboard_host="127.0.0.1",
                log_to_driver=False,
                configure_logging=False,
            )
        # Ray raises a bare Exception for this one case; anything else is re-raised at once.
        except Exception as e:
            if "timed out during startup" not in str(e) or attempt == RAY_START_ATTEMPTS:
                raise
            logger.warning(
                "embedded Ray did not start within Ray's 30 s (attempt %d of %d, the machine "
                "is loaded); starting it again",
                attempt,
                RAY_START_ATTEMPTS,
            )
            ray.shutdown()
    raise AssertionError("unreachable")


def start_ray(spec: JobSpec, dashboard: bool) -> None:
    """Join the configured cluster, or start an embedded Ray sized so that training workers and
    eval parts fit side by side (logical CPUs: Ray would otherwise queue eval until training
    ends on a small machine)."""
    import os
    import shlex
    import sys

    import ray

    if spec.ray_address:
        ray.init(address=spec.ray_address, log_to_driver=False)
        check_joined_cluster(spec)
        return
    tr, ev = spec.training, spec.evaluation
    cpus = math.ceil(tr.num_workers * tr.cpus_per_worker + ev.max_concurrent * ev.cpus_per_task)
    ctx = init_embedded_ray(cpus, dashboard)
    if not dashboard:
        return
    address = getattr(ctx, "dashboard_url", None) or "127.0.0.1:8265"
    url = address if "://" in address else f"http://{address}"
    if os.environ.get("RAY_AUTH_MODE", "token").lower() == "disabled":
        logger.info("Ray dashboard: %s", url)
        return
    # Ray 2.60 turns token authentication on: the dashboard opens on "Authentication Token
    # Required". Say where the token comes from (this venv's `ray`), never the token itself.
    ray_cli = Path(sys.executable).with_name("ray")
    command = shlex.quote(str(ray_cli)) if ray_cli.is_file() else "ray"
    logger.info(
        "Ray dashboard: %s (token authentication is on: paste the token that `%s "
        "get-auth-token` prints, in this shell's environment, into its login prompt)",
        url,
        command,
    )


RAY_NODES_WAIT_S = 120.0


def check_joined_cluster(spec: JobSpec, wait_s: float = RAY_NODES_WAIT_S) -> None:
    """On a joined cluster: wait for the nodes the allocation starts (``ORCH_RAY_NODES``, set by
    the SLURM batch script, whose workers join after the head), then check that training fits
    the nodes that are there (orchestrator/checks/capacity.py). Either failure is an error
    naming the nodes, not a training run that waits for resources forever."""
    import os
    import time

    import ray

    from orchestrator.checks.capacity import Node, check_fits

    def alive() -> list[Node]:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return sorted(
            (
                Node(
                    str(n.get("NodeName") or n.get("NodeManagerAddress") or n["NodeID"][:8]),
                    float(n.get("Resources", {}).get("CPU", 0)),
                    float(n.get("Resources", {}).get("GPU", 0)),
                )
                for n in nodes
            ),
            key=lambda n: n.name,
        )

    expected = int(os.environ.get("ORCH_RAY_NODES", "0") or 0)
    nodes = alive()
    deadline = time.monotonic() + wait_s
    while len(nodes) < expected and time.monotonic() < deadline:
        time.sleep(1.0)
        nodes = alive()
    if len(nodes) < expected:
        raise ClusterError(
            f"only {len(nodes)} of the allocation's {expected} Ray nodes joined the head at "
            f"{spec.ray_address} within {wait_s:.0f} s; see the job's log for the worker nodes' "
            "`ray start` (srun) errors"
        )
    logger.info(
        "Ray cluster: %d node(s) (%s)",
        len(nodes),
        ", ".join(f"{n.name}: {n.cpus:g} CPUs" for n in nodes),
    )
    check_fits(spec, nodes, f"the Ray cluster at {spec.ray_address}", "add nodes to it")


def submit(spec: JobSpec, *, run_name: str | None = None, dashboard: bool = True) -> int:
    """Run a job to the end in this process; return the exit code."""
    import ray

    from orchestrator.core.controller import Controller, FinishedTraining
    from orchestrator.launch.procs import ProcessRecorder, reap_leftovers
    from orchestrator.launch.train_run import RayTrainRun, training_finished
    from orchestrator.logging_setup import add_file_log

    sizes = preflight(spec, run_path=spec.runs_dir / (run_name or ""))
    logger.info("pre-flight ok: %s", ", ".join(f"{n} {k} train samples" for n, k in sizes.items()))
    rundir = open_run(spec, run_name)
    lock = lock_run(rundir)  # noqa: F841  (held until this process exits)
    add_file_log(rundir.controller_log)
    rundir.controller_end.unlink(missing_ok=True)  # this controller's end is not written yet
    request = rundir.preempt_request
    if request.exists():  # left by the allocation that was preempted; this one trains on
        request.unlink()
    install_preemption_handlers(request)  # a signal while Ray starts is a request too
    reap_leftovers(rundir.processes)
    start_ray_keeping_handlers(spec, dashboard, request)
    recorder = ProcessRecorder(rundir.processes).start()
    tracker = make_tracker(spec, rundir)
    backend = make_backend(spec, rundir)
    code = 1
    try:
        finished = training_finished(spec, rundir)
        training: RayTrainRun | FinishedTraining
        if finished is None:
            training = RayTrainRun(spec, rundir).start()
        else:
            logger.info("training finished at step %d; it is not started again", finished)
            training = FinishedTraining()
        code = Controller(spec, rundir, backend, tracker, training).run()
    finally:
        if code == ExitCode.PREEMPTED and isinstance(backend, AdoptingBackend):
            left = backend.detach()  # the requeued or resumed controller adopts them
            if left:
                logger.info("%d eval part(s) left running for the next controller", len(left))
        backend.close()
        tracker.finish(code)
        recorder.stop()
        ray.shutdown()
    logger.info("run directory: %s", rundir.path)
    return code


def start_ray_keeping_handlers(spec: JobSpec, dashboard: bool, request: Path) -> None:
    """``start_ray``, then the preemption handlers again: ``ray.init`` (and an embedded head)
    put their own SIGTERM handler in, which exits at once, and a SIGTERM to a local `orch
    submit` then lost the step's checkpoint instead of asking for it."""
    start_ray(spec, dashboard)
    install_preemption_handlers(request)


def install_preemption_handlers(request: Path) -> None:
    """SLURM's ``--signal=B:USR1@N`` (forwarded by the batch script) or a SIGTERM: ask training
    to checkpoint at the end of its step and stop; the controller then exits with code 3."""
    import signal

    def handler(signum: int, _frame: Any) -> None:
        request.parent.mkdir(parents=True, exist_ok=True)
        request.write_text(f"{signal.Signals(signum).name}\n")
        logger.warning(
            "%s received: training checkpoints at the end of this step and stops",
            signal.Signals(signum).name,
        )

    signal.signal(signal.SIGUSR1, handler)
    signal.signal(signal.SIGTERM, handler)


def publish_now(rundir: RunDir) -> None:
    """Fold and publish imported results of a run no controller is running (takes the lock, so
    the tracker still has one writer)."""
    from orchestrator.core.controller import Controller, FinishedTraining
    from orchestrator.eval_backends.base import NullBackend

    lock = lock_run(rundir)  # noqa: F841  (raises if a controller holds the run)
    spec = rundir.read_spec()
    tracker = make_tracker(spec, rundir)
    try:
        controller = Controller(spec, rundir, NullBackend(), tracker, FinishedTraining())
        controller.fold_imports()
        controller.flush()
    finally:
        tracker.finish(0)
