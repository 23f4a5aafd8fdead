"""The whole loop through the real CLI, real Ray, real DeepSpeed (ZeRO-2 on CPU, gloo) and
wandb offline, read back from its run file."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

from orchestrator.contract.checkpoint import checkpoint_dir, recorded_digest
from orchestrator.tracking import find_offline_runs, read_offline_run
from tests.helpers.cli import orch, orch_popen
from tests.helpers.jobs import demo_job
from tests.helpers.runs import DemoRun
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_demo_mix_end_to_end(tmp_path: Path, demo_data: Path, demo_run: DemoRun) -> None:
    run = demo_run.run
    datasets = ["digits", "faces", "textures"]

    # Every checkpoint evaluated for every dataset, and merged.
    steps = sorted(int(p.name.split("_")[1]) for p in (run / "checkpoints").iterdir())
    assert steps == [40, 80, 120]
    # Saved asynchronously (the default): each event says how long the loop was held.
    events = [json.loads(x) for x in (run / "logs" / "train_events.jsonl").open()]
    saved = [e for e in events if e["event"] == "checkpoint"]
    assert [e["step"] for e in saved] == steps and all(e["async"] for e in saved)
    assert all(e["ckpt_block_s"] > 0 and e["hf_export_s"] > 0 for e in saved)
    assert events[-1]["event"] == "finished"  # after the last checkpoint's COMPLETE
    for step in steps:
        for d in datasets:
            part = json.loads((run / "eval" / f"step_{step:06d}" / f"{d}.json").read_text())
            assert part["step"] == step and part["partial"] is True and part["n"] > 0
        merged = json.loads((run / "eval" / f"step_{step:06d}.json").read_text())
        assert sorted(merged["datasets"]) == datasets and merged["missing"] == {}

    # The head file holds the head: under DeepSpeed its tensors are views into the flat buffer
    # of all parameters, and saving a view writes the whole buffer.
    head_file = run / "checkpoints" / "step_000120" / "hf" / "classifier_head.pt"
    head = torch.load(head_file, weights_only=True)
    assert head_file.stat().st_size < sum(v.numel() * v.element_size() for v in head.values()) + (
        4096
    )

    # Partial eval used eval_ratio (digits 0.5) on a stratified subset; the final used all.
    digits_test = sum(1 for _ in (demo_data / "digits" / "test.jsonl").open())
    part = json.loads((run / "eval" / "step_000040" / "digits.json").read_text())
    assert abs(part["n"] - digits_test / 2) <= 10

    # The final full eval of the best step, and `orch results --json` agrees with the files.
    best = json.loads((run / "best.json").read_text())
    final = json.loads((run / "eval" / "final.json").read_text())
    assert final["step"] == best["step"] and final["partial"] is False
    assert final["datasets"]["digits"]["n"] == digits_test
    res = orch("results", str(run), "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout)
    assert results["best"]["step"] == best["step"]
    assert [s["step"] for s in results["steps"]] == steps
    assert results["final"]["overall"]["accuracy"] == pytest.approx(final["overall"]["accuracy"])
    # Well above chance (digits 0.1, textures 0.1, faces 0.5) after 120 tiny steps.
    assert final["overall"]["accuracy"] > 0.5, final

    # The run is watchable and re-evaluable from the terminal.
    status = json.loads(orch("status", str(run), "--json", cwd=tmp_path).stdout)
    assert status["training"]["state"] == "finished" and status["checkpoints"] == steps
    assert status["eval_parts"] == {"succeeded": 12}  # 3 steps + final, 3 datasets each
    assert orch("results", str(run), "--plot", cwd=tmp_path).returncode == 0
    assert (run / "results.png").stat().st_size > 10_000
    again = orch("eval", str(run), "--step", "best", "--full", "--datasets", "faces", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    name = f"step_{best['step']:06d}-full.json"
    ondemand = json.loads((run / "eval" / "ondemand" / name).read_text())
    # The same checkpoint, set and worker: the same numbers as the final full eval.
    assert ondemand["datasets"]["faces"] == final["datasets"]["faces"]
    assert set(final["datasets"]["faces"]) >= {"accuracy", "loss", "top5_accuracy", "n"}

    # wandb, read back from the offline run file: eval values on the eval step axis.
    files = find_offline_runs(run / "wandb")
    assert len(files) == 1
    wb = read_offline_run(files[0])
    evals = [r for r in wb.history if "eval/step" in r]
    assert sorted(r["eval/step"] for r in evals) == steps
    for r in evals:
        merged = json.loads((run / "eval" / f"step_{r['eval/step']:06d}.json").read_text())
        assert r["eval/overall/accuracy"] == pytest.approx(merged["overall"]["accuracy"])
    train_steps = [r["train/step"] for r in wb.history if "train/step" in r]
    assert train_steps == sorted(train_steps) and train_steps[-1] == 120
    wandb_steps = [r["_step"] for r in wb.history if "_step" in r]
    assert wandb_steps == sorted(wandb_steps)  # the main step never regresses
    assert wb.summary["best/step"] == best["step"]
    assert wb.summary["final/overall/accuracy"] == pytest.approx(final["overall"]["accuracy"])
    assert wb.config["training"]["max_steps"] == 120

    # Continuing a finished run starts no worker group: nothing is left to train or evaluate.
    starts = (run / "logs" / "train_events.jsonl").read_text().count('"started"')
    again = orch("resume", str(run), "--no-dashboard", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training finished at step 120; it is not started again" in again.stderr
    assert (run / "logs" / "train_events.jsonl").read_text().count('"started"') == starts
    assert json.loads((run / "eval" / "final.json").read_text()) == final


def _train_workers(parent: int) -> list[psutil.Process]:
    found = []
    for p in psutil.Process(parent).children(recursive=True):
        try:
            # DataLoader workers forked from a train worker share its command line, not its name.
            if "RayTrainWorker" in p.name():
                found.append(p)
        except psutil.NoSuchProcess:
            continue
    return found


def _is_ray_worker(p: psutil.Process) -> bool:
    """A Ray worker process (an actor, a task, or a DataLoader worker forked from one), as
    opposed to the raylet, the GCS and Ray's per-node agents."""
    try:
        cmd = " ".join(p.cmdline())
    except psutil.NoSuchProcess:
        return False
    agents = ("RuntimeEnvAgent", "DashboardAgent")
    return cmd.startswith("ray::") and not any(a in cmd for a in agents)


def test_a_killed_worker_then_a_killed_controller_lose_nothing(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    """Two failures in one run. SIGKILL one Ray Train worker after the first checkpoint: the
    worker group restarts from a complete checkpoint (weights, optimizer, step). Then SIGKILL
    the whole controller (driver, embedded Ray, training, eval tasks) and `orch resume`: every
    checkpoint is evaluated, merged and published once, and training continues, not restarts."""
    job = demo_job(
        tmp_path, demo_data, tiny_model, max_steps=120, checkpoint_every=30, max_failures=1,
        keep_last=1,
    )  # fmt: skip
    first = orch_popen(
        "submit", str(job), "--no-dashboard", "--run-name", "chaos", cwd=tmp_path, new_session=True
    )
    run = tmp_path / "runs" / "chaos"
    events_file = run / "logs" / "train_events.jsonl"

    def events() -> list[dict[str, Any]]:
        lines = events_file.read_text().splitlines() if events_file.is_file() else []
        return [json.loads(line) for line in lines if line.strip()]

    try:
        ckpt = run / "checkpoints/step_000030/COMPLETE"
        wait_for(ckpt.exists, 600, "the first checkpoint", 0.05)
        workers = _train_workers(first.pid)
        assert len(workers) == 2, workers
        os.kill(workers[-1].pid, signal.SIGKILL)
        # The group restarted and saved a checkpoint after the restart: now the controller.
        wait_for(lambda: len([e for e in events() if e["event"] == "started"]) == 2, 600, "restart")
        restarted_at = [e for e in events() if e["event"] == "started"][1]["step"]
        after = run / f"checkpoints/step_{restarted_at + 30:06d}/COMPLETE"
        wait_for(after.exists, 600, "a checkpoint after the restart", 0.05)
        family = [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]
        # Ray's workers (train workers, their loader workers, eval tasks, Train's actors); not
        # its RuntimeEnvAgent and DashboardAgent, which outlive a SIGKILLed driver by a minute.
        workers = [p for p in family if _is_ray_worker(p)]
        assert workers, family
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        # Training dies with its controller: no orphan keeps writing into the run directory.
        _, alive = psutil.wait_procs(workers, timeout=120)  # returns once they are gone
        assert not alive, alive
    finally:
        if first.poll() is None:
            first.kill()
    assert not (run / "eval" / "final.json").exists()

    again = orch("resume", str(run), "--no-dashboard", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-4000:]
    # What Ray left behind (its agents outlive a SIGKILLed driver) was reaped by the resume.
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    steps = [30, 60, 90, 120]
    assert sorted(int(p.name[5:]) for p in (run / "checkpoints").iterdir()) == steps
    # training.keep_last = 1: every checkpoint kept its HF weights, only the last its state;
    # each restart resumed from the latest checkpoint, which always kept it.
    status = json.loads(orch("status", str(run), "--json", cwd=tmp_path).stdout)
    assert status["checkpoints"] == steps and status["resumable"] == [120]
    assert status["disk"]["checkpoints_bytes"] > 0
    removed = [json.loads(x) for x in (run / "logs" / "retention.jsonl").open()]
    # (a record is written before its removal: the SIGKILL may have come between the two)
    assert {(r["step"], r["removed"]) for r in removed} == {(s, "state") for s in (30, 60, 90)}
    starts = [e for e in events() if e["event"] == "started"]
    assert len(starts) == 3, events()
    assert starts[0]["step"] == 0 and starts[0]["resumed_from"] is None
    # The worker group restart and the resume each continued from a complete checkpoint.
    assert starts[1]["step"] in (30, 60) and starts[2]["step"] >= starts[1]["step"] + 30
    for start in starts[1:]:
        assert start["resumed_from"].endswith(f"step_{start['step']:06d}")
    assert events()[-1] == {**events()[-1], "event": "finished", "step": 120}
    for step in steps:
        merged = json.loads((run / "eval" / f"step_{step:06d}.json").read_text())
        assert merged["missing"] == {}
    assert (run / "eval" / "final.json").is_file()
    # Parts that had finished before the kill were not evaluated again.
    for ledger in (run / "ledger").glob("step_*/*.json"):
        entry = json.loads(ledger.read_text())
        part = json.loads((run / "eval" / ledger.parent.name / ledger.name).read_text())
        assert entry["status"] == "succeeded" and part["attempt"] == entry["attempt"]
    # The same wandb run, resumed: each eval step and each train step logged exactly once.
    files = find_offline_runs(run / "wandb")
    assert len(files) == 2
    runs = [read_offline_run(f) for f in files]
    assert runs[0].run_id == runs[1].run_id
    history = [row for r in runs for row in r.history]
    eval_steps = [row["eval/step"] for row in history if "eval/step" in row]
    assert sorted(eval_steps) == steps
    train_steps = [row["train/step"] for row in history if "train/step" in row]
    assert len(train_steps) == len(set(train_steps)) and max(train_steps) == 120
    assert len([row for row in history if "final/step" in row]) == 1


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(
    tmp_path: Path, demo_run: DemoRun
) -> None:
    """fp32 on CPU: a new run resumed from step 40 of the demo run reaches bit-identical weights
    and losses at step 120 (weights, optimizer, scheduler, step and data position). The demo
    run checkpoints asynchronously (the default), the resumed one synchronously: their
    checkpoints of the same steps hold the same bytes."""
    from safetensors.torch import load_file

    quiet = [
        "--no-dashboard",
        *("--set", "evaluation.during_training=false"),
        *("--set", "evaluation.final_full=false"),
        *("--set", "tracking.mode='disabled'"),
        *("--set", f"runs_dir='{tmp_path / 'runs'}'"),
    ]
    whole = demo_run.run
    b = orch("submit", str(demo_run.job), "--run-name", "resumed", *quiet,
             "--resume-from", str(whole / "checkpoints" / "step_000040"),
             "--set", "training.async_checkpoint=false", cwd=tmp_path)  # fmt: skip
    assert b.returncode == 0, b.stderr[-3000:]
    resumed = tmp_path / "runs" / "resumed"
    starts = [json.loads(x) for x in (resumed / "logs" / "train_events.jsonl").open()]
    assert starts[0]["event"] == "started" and starts[0]["step"] == 40
    wa = load_file(whole / "checkpoints" / "step_000120" / "hf" / "model.safetensors")
    wb = load_file(resumed / "checkpoints" / "step_000120" / "hf" / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for step in (80, 120):
        a, b = (checkpoint_dir(r / "checkpoints", step) for r in (whole, resumed))
        assert recorded_digest(a) == recorded_digest(b) is not None
        assert (a / "hf" / "classifier_head.pt").read_bytes() == (
            b / "hf" / "classifier_head.pt"
        ).read_bytes()
    saved = [e for e in starts if e["event"] == "checkpoint"]
    assert [e["step"] for e in saved] == [80, 120] and not any(e["async"] for e in saved)

    def losses(run: Path) -> dict[int, float]:
        rows = [json.loads(x) for x in (run / "logs" / "train_metrics.jsonl").open()]
        return {r["step"]: r["loss"] for r in rows}

    la, lb = losses(whole), losses(resumed)
    assert sorted(lb) == list(range(50, 130, 10))
    assert all(la[s] == lb[s] for s in lb)
