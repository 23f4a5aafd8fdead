"""Trackers, and what WandbTracker really writes (offline runs read back from disk)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestrator.tracking import (
    CompositeTracker,
    MemoryTracker,
    NullTracker,
    Tracker,
    WandbFileError,
    WandbOfflineRun,
    WandbTracker,
    find_offline_runs,
    read_offline_run,
    wandb_run_id,
)
from orchestrator.tracking.base import prefixed

RUN_NAME = "demo.job-20260101-120000"


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """wandb offline and silent, every wandb directory under tmp_path."""
    home = tmp_path / "wandb-home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(home))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("WANDB_RESUME", raising=False)
    run_dir = tmp_path / "runs" / RUN_NAME
    run_dir.mkdir(parents=True)
    return run_dir


def make_tracker(run_dir: Path, config: dict[str, Any] | None = None) -> WandbTracker:
    return WandbTracker(
        run_dir=run_dir,
        run_name=RUN_NAME,
        project="orch-tests",
        mode="offline",
        config=config if config is not None else {"training": {"lr": 1e-4}},
        tags=["test"],
    )


def rows_with(run: WandbOfflineRun, key: str) -> list[dict[str, Any]]:
    return [row for row in run.history if key in row]


def flat(row: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """`{"train": {"loss": 1}}`-style nesting is not expected: keys stay flat."""
    return {k: v for k, v in row.items() if k.startswith(prefix + "/")}


# --- WandbTracker, read back through the .wandb file -----------------------------------


def test_wandb_offline_out_of_order_eval(
    offline_env: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_dir = offline_env
    monkeypatch.delenv("WANDB_SILENT")  # the tracker's own settings must keep wandb quiet
    # A config bigger than a 32 KiB block: its record is split over several chunks.
    config = {
        "name": "demo",
        "training": {"lr": 1e-4, "bf16": True, "steps": [10, 20, 30]},
        "datasets": {"digits": {"path": "/data/digits", "weight": 0.5}},
        "blob": "x" * 100_000,
    }
    tracker = make_tracker(run_dir, config)
    for step in (10, 20, 30):
        tracker.log_train(step, {"loss": 1.0 / step, "digits/accuracy": step / 100})
    tracker.log_eval(20, {"overall/accuracy": 0.75, "digits/loss": 0.5})  # after train 30
    tracker.log_eval(10, {"overall/accuracy": 0.5, "digits/loss": 0.9})  # older still
    tracker.summary({"best/step": 20, "best/metric": "overall/accuracy", "best/value": 0.75})
    tracker.log_final(20, {"overall/accuracy": 0.8, "digits/n": 1000.0})
    tracker.finish(0)
    tracker.finish(0)  # idempotent

    out, err = capfd.readouterr()
    assert out == "" and err == "", "the tracker (and wandb) must not print"
    assert "Serializing object of type str" in caplog.text  # wandb's warning, sent to logging

    assert not list((run_dir / "wandb").glob("*/files/output.log")), "console capture is off"
    files = find_offline_runs(run_dir / "wandb")
    assert len(files) == 1
    assert files[0].name == f"run-{wandb_run_id(RUN_NAME)}.wandb"
    assert files[0].stat().st_size > 64 * 1024
    run = read_offline_run(files[0])
    assert run.run_id == wandb_run_id(RUN_NAME)
    assert run.exit_code == 0

    steps = [row["_step"] for row in run.history]
    assert steps == sorted(steps) and len(set(steps)) == len(steps), steps

    train = rows_with(run, "train/step")
    assert [r["train/step"] for r in train] == [10, 20, 30]
    assert [r["train/loss"] for r in train] == [0.1, 0.05, 1.0 / 30]
    assert [r["train/digits/accuracy"] for r in train] == [0.1, 0.2, 0.3]
    assert all(not flat(r, "eval") and not flat(r, "final") for r in train)

    evals = rows_with(run, "eval/step")
    assert [flat(r, "eval") for r in evals] == [
        {"eval/step": 20, "eval/overall/accuracy": 0.75, "eval/digits/loss": 0.5},
        {"eval/step": 10, "eval/overall/accuracy": 0.5, "eval/digits/loss": 0.9},
    ]
    assert all(not flat(r, "train") for r in evals)
    # eval rows come after all train rows in _step order, whatever checkpoint they are about
    assert evals[0]["_step"] > train[-1]["_step"]

    finals = rows_with(run, "final/step")
    assert [flat(r, "final") for r in finals] == [
        {"final/step": 20, "final/overall/accuracy": 0.8, "final/digits/n": 1000.0}
    ]

    s = run.summary
    assert (s["best/step"], s["best/metric"], s["best/value"]) == (20, "overall/accuracy", 0.75)
    assert (s["final/step"], s["final/overall/accuracy"], s["final/digits/n"]) == (20, 0.8, 1000)
    # the summary shows the newest checkpoint's eval, not the last one to arrive
    assert (s["eval/step"], s["eval/overall/accuracy"]) == (20, 0.75)
    assert s["train/step"] == 30

    assert {k: v for k, v in run.config.items() if k != "_wandb"} == config


def test_wandb_restart_resumes_same_run(offline_env: Path) -> None:
    run_dir = offline_env
    first = make_tracker(run_dir)
    first.log_train(10, {"loss": 1.0})
    first.log_eval(10, {"overall/accuracy": 0.5})
    first.finish(1)

    second = make_tracker(run_dir)  # a restarted controller: same run name, same run dir
    assert second.run_id == first.run_id
    second.log_train(20, {"loss": 0.5})
    second.log_eval(20, {"overall/accuracy": 0.7})
    second.finish(0)

    files = find_offline_runs(run_dir / "wandb")
    assert len(files) == 2
    assert files[0].parent != files[1].parent
    runs = [read_offline_run(f) for f in files]
    assert [r.run_id for r in runs] == [wandb_run_id(RUN_NAME)] * 2
    assert [r.exit_code for r in runs] == [1, 0]
    # oldest first
    assert [[row["train/step"] for row in rows_with(r, "train/step")] for r in runs] == [[10], [20]]
    assert [[row["eval/step"] for row in rows_with(r, "eval/step")] for r in runs] == [[10], [20]]
    for r in runs:
        steps = [row["_step"] for row in r.history]
        assert steps == sorted(steps)


def test_wandb_tracker_never_raises_after_failure(
    offline_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = make_tracker(offline_env)
    tracker.log_train(1, {"loss": 2.0})
    calls: list[dict[str, Any]] = []

    def broken_log(row: dict[str, Any]) -> None:
        calls.append(row)
        raise RuntimeError("wandb service gone")

    real_log = tracker.run.log
    tracker.run.log = broken_log  # type: ignore[method-assign]
    tracker.log_train(2, {"loss": 1.0})  # logged, not raised
    tracker.log_eval(2, {"overall/accuracy": 0.1})  # tracking is off now
    tracker.summary({"best/step": 2})
    assert len(calls) == 1
    assert "wandb service gone" in caplog.text
    tracker.run.log = real_log  # type: ignore[method-assign]
    tracker.finish(0)
    tracker.log_train(3, {"loss": 0.5})  # after finish: ignored with a warning

    (path,) = find_offline_runs(offline_env / "wandb")
    run = read_offline_run(path)
    assert [r["train/step"] for r in rows_with(run, "train/step")] == [1]
    assert "best/step" not in run.summary


# --- the .wandb reader on its own -----------------------------------------------------


@pytest.fixture
def wandb_file(offline_env: Path) -> Path:
    tracker = make_tracker(offline_env, {"blob": "y" * 50_000})
    for step in range(1, 6):
        tracker.log_train(step, {"loss": 1.0 / step})
    tracker.finish(0)
    (path,) = find_offline_runs(offline_env / "wandb")
    return path


def test_reader_rejects_corruption(wandb_file: Path, tmp_path: Path) -> None:
    data = bytearray(wandb_file.read_bytes())
    good = read_offline_run(wandb_file)
    assert len(rows_with(good, "train/step")) == 5

    bad_header = tmp_path / "bad-header.wandb"
    bad_header.write_bytes(b"XXXX" + bytes(data[4:]))
    with pytest.raises(WandbFileError, match=r"not a \.wandb file"):
        read_offline_run(bad_header)

    flipped = tmp_path / "flipped.wandb"
    data_flipped = bytearray(data)
    data_flipped[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data_flipped))
    with pytest.raises(WandbFileError):
        read_offline_run(flipped)


def test_reader_tolerates_truncated_tail(wandb_file: Path, tmp_path: Path) -> None:
    data = wandb_file.read_bytes()
    cut = tmp_path / "cut.wandb"
    cut.write_bytes(data[: len(data) - 5])  # inside the last record
    run = read_offline_run(cut)
    assert run.exit_code is None  # the exit record is the last one
    assert [r["train/step"] for r in rows_with(run, "train/step")] == [1, 2, 3, 4, 5]

    head_only = tmp_path / "head.wandb"
    head_only.write_bytes(data[: 32 * 1024 + 3])  # ends inside the split config record
    run = read_offline_run(head_only)
    assert run.history == []


def test_find_offline_runs_order(tmp_path: Path) -> None:
    wandb_dir = tmp_path / "wandb"
    names = [
        "offline-run-20260101_120000-abc-2",
        "offline-run-20260101_120000-abc-10",
        "offline-run-20251231_235959-abc",
        "offline-run-20260101_120000-abc",
    ]
    for name in names:
        (wandb_dir / name).mkdir(parents=True)
        (wandb_dir / name / "run-abc.wandb").write_bytes(b"")
    (wandb_dir / "run-20260101_120000-xyz").mkdir()  # online run: not listed
    (wandb_dir / "run-20260101_120000-xyz" / "run-xyz.wandb").write_bytes(b"")
    found = [p.parent.name for p in find_offline_runs(wandb_dir)]
    assert found == [
        "offline-run-20251231_235959-abc",
        "offline-run-20260101_120000-abc",
        "offline-run-20260101_120000-abc-2",
        "offline-run-20260101_120000-abc-10",
    ]


def test_wandb_run_id() -> None:
    assert wandb_run_id("job-20260101-120000") == "job-20260101-120000"
    assert wandb_run_id("a_b-C9") == "a_b-C9"
    ids = {wandb_run_id(n) for n in ("my.job", "my/job", "my job", "my-job")}
    assert len(ids) == 4
    for name in ("my.job", "x" * 200, "ünïcode run", "/", ""):
        run_id = wandb_run_id(name)
        assert run_id == wandb_run_id(name)  # stable
        assert 0 < len(run_id) <= 64
        assert all(c.isascii() and (c.isalnum() or c in "-_") for c in run_id), run_id
    assert wandb_run_id("x" * 200) != wandb_run_id("x" * 201)


# --- the in-process trackers ------------------------------------------------------------


def test_memory_tracker_records_calls() -> None:
    t = MemoryTracker()
    assert isinstance(t, Tracker)
    metrics = {"loss": 1.0}
    t.log_train(10, metrics)
    metrics["loss"] = 99.0  # the tracker kept a copy
    t.log_eval(20, {"overall/accuracy": 0.5})
    t.log_eval(10, {"overall/accuracy": 0.4})
    t.summary({"best/step": 20})
    t.log_final(20, {"overall/accuracy": 0.6})
    assert not t.finished
    t.finish(3)
    assert t.train == [(10, {"loss": 1.0})]
    assert t.eval == [(20, {"overall/accuracy": 0.5}), (10, {"overall/accuracy": 0.4})]
    assert t.final == [(20, {"overall/accuracy": 0.6})]
    assert t.summaries == {"best/step": 20, "final/step": 20, "final/overall/accuracy": 0.6}
    assert t.finished and t.exit_code == 3


def test_composite_tracker_fans_out() -> None:
    a, b = MemoryTracker(), MemoryTracker()
    c = CompositeTracker([a, NullTracker(), b])
    assert isinstance(c, Tracker) and isinstance(NullTracker(), Tracker)
    c.log_train(1, {"loss": 2.0})
    c.log_eval(1, {"overall/accuracy": 0.1})
    c.log_final(1, {"overall/accuracy": 0.2})
    c.summary({"best/step": 1})
    c.finish(0)
    for t in (a, b):
        assert t.train == [(1, {"loss": 2.0})]
        assert t.eval == [(1, {"overall/accuracy": 0.1})]
        assert t.final == [(1, {"overall/accuracy": 0.2})]
        assert t.summaries["best/step"] == 1
        assert t.finished and t.exit_code == 0


def test_composite_tracker_calls_all_then_raises() -> None:
    class Broken(NullTracker):
        def log_train(self, step: int, metrics: Mapping[str, float]) -> None:
            raise RuntimeError("boom")

    after = MemoryTracker()
    c = CompositeTracker([Broken(), after])
    with pytest.raises(RuntimeError, match="boom"):
        c.log_train(5, {"loss": 1.0})
    assert after.train == [(5, {"loss": 1.0})]


def test_prefixed_row() -> None:
    assert prefixed("eval", 20, {"digits/accuracy": 0.5, "step": 3.0}) == {
        "eval/step": 20,
        "eval/digits/accuracy": 0.5,
    }
    assert json.dumps(prefixed("train", 1, {})) == '{"train/step": 1}'


def test_logged_state_reads_what_the_offline_files_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.tracking.wandb_file import logged_state

    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = WandbTracker(tmp_path, "state-run", "orch-test", "offline", {})
    tracker.log_train(10, {"loss": 1.0})
    tracker.log_train(20, {"loss": 0.5})
    tracker.log_eval(10, {"overall/accuracy": 0.5})
    tracker.finish(0)
    state = logged_state(tmp_path / "wandb", tracker.run_id)
    assert (state.train_step, state.eval_steps, state.final) == (20, frozenset({10}), False)
    again = WandbTracker(tmp_path, "state-run", "orch-test", "offline", {})
    assert again.durable == state  # read before the new start adds its own file
    again.finish(0)
