"""The sbatch wrapper is a pure function of its options: golden files for a normal job, a
multi-node GPU job and hostile values, and proof that a hostile value cannot run a command.

Regenerate the golden files with ORCH_UPDATE_GOLDEN=1 after an intended change."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from orchestrator.contract.errors import SpecError
from orchestrator.launch.slurm_allocation import SbatchOptions, render_sbatch

GOLDEN = Path(__file__).parent / "golden"

CASES = {
    "cpu_one_node": SbatchOptions(
        job_name="orch-demo_mix-20261122-101500",
        run_dir=Path("/shared/runs/demo_mix-20261122-101500"),
        python="/opt/orch/.venv/bin/python",
        workdir=Path("/opt/orch"),
    ),
    "gpu_four_nodes": SbatchOptions(
        job_name="orch-food_mix-a",
        run_dir=Path("/lustre/team/runs/food_mix-a"),
        python="/opt/orch/.venv/bin/python",
        workdir=Path("/opt/orch"),
        nodes=4,
        cpus_per_task=64,
        gpus_per_node=8,
        mem="512G",
        time="2-00:00:00",
        partition="h100",
        account="vlm-team",
        qos="high",
        signal_s=600,
    ),
    # Shell metacharacters everywhere a path or command can carry them: all quoted.
    "hostile_paths": SbatchOptions(
        job_name="orch-x",
        run_dir=Path("/tmp/runs/$(touch /tmp/pwned-a);`touch /tmp/pwned-b`'\"x"),
        python="/opt/my env/$(touch /tmp/pwned-c)/python",
        workdir=Path("/opt/o'rch; touch /tmp/pwned-d"),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    rendered = render_sbatch(CASES[name])
    path = GOLDEN / f"{name}.sbatch"
    if os.environ.get("ORCH_UPDATE_GOLDEN"):
        path.write_text(rendered)
    assert rendered == path.read_text()


def test_hostile_values_never_execute(tmp_path: Path) -> None:
    """Run the hostile script's shell-facing part for real with bash, every external command
    stubbed: the injected `touch` commands must not create their files."""
    for f in ("/tmp/pwned-a", "/tmp/pwned-b", "/tmp/pwned-c", "/tmp/pwned-d"):
        Path(f).unlink(missing_ok=True)
    script = render_sbatch(CASES["hostile_paths"])
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for cmd in ("scontrol", "srun", "getent", "pkill", "sbatch"):
        (stubs / cmd).write_text("#!/bin/sh\nexit 0\n")
        (stubs / cmd).chmod(0o755)
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NODELIST": "n1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_CPUS_PER_TASK": "1",
        "TMPDIR": str(tmp_path),
    }
    subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    planted = ("/tmp/pwned-a", "/tmp/pwned-b", "/tmp/pwned-c", "/tmp/pwned-d")
    assert not any(Path(f).exists() for f in planted)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("job_name", "x\n#SBATCH --uid=0", "--job-name"),
        ("partition", "gpu; rm -rf /", "--partition"),
        ("account", "a b", "--account"),
        ("time", "tomorrow", "--time"),
        ("mem", "64G$(id)", "--mem"),
    ],
)
def test_directive_values_that_cannot_be_quoted_are_rejected(
    field: str, value: str, message: str
) -> None:
    from dataclasses import replace

    with pytest.raises(SpecError, match=message):
        render_sbatch(replace(CASES["cpu_one_node"], **{field: value}))  # type: ignore[arg-type]


def _orch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import sys

    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PYTHONPATH": str(root)},
    )


def test_dry_run_prints_the_script_and_creates_nothing(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    from tests.helpers.jobs import demo_job

    job = demo_job(tmp_path, demo_data, tiny_model)
    out = _orch(
        "submit", str(job), "--cluster", "slurm", "--run-name", "dry", "--partition", "gpu",
        "--time", "1:00:00", "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("#!/bin/bash\n#SBATCH --job-name=orch-dry\n")
    assert "#SBATCH --partition=gpu" in out.stdout and "#SBATCH --time=1:00:00" in out.stdout
    assert f"resume dry --runs-dir {tmp_path / 'runs'}" in out.stdout
    assert not (tmp_path / "runs" / "dry").exists()


def test_a_hostile_option_is_refused_before_anything_is_created(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    from tests.helpers.jobs import demo_job

    job = demo_job(tmp_path, demo_data, tiny_model)
    out = _orch(
        "submit", str(job), "--cluster", "slurm", "--run-name", "bad",
        "--partition", "gpu\n#SBATCH --uid=0", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--partition" in out.stderr and "SBATCH values may only hold" in out.stderr
    assert not (tmp_path / "runs" / "bad").exists()


def test_training_the_allocation_cannot_hold_is_refused_before_anything_is_created(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    """Ray Train would wait for resources until the time limit: the request is checked against
    the allocation asked for (nodes x CPUs and GPUs per node), with every setting named."""
    from tests.helpers.jobs import demo_job

    job = demo_job(tmp_path, demo_data, tiny_model)  # 2 workers of 1 CPU
    cases = [
        (["--nodes", "1", "--cpus-per-task", "1"], "training.num_workers = 2 (each 1 CPU(s)"),
        (["--nodes", "2", "--set", "training.cpus_per_worker=3"], "(each 3 CPU(s)"),
        (["--nodes", "2", "--set", "training.use_gpu=true"], "(each 1 CPU(s) and 1 GPU"),
        (
            ["--nodes", "1", "--gpus-per-node", "1", "--set", "training.use_gpu=true"],
            "hold at most 1 such worker(s)",
        ),
    ]
    for args, named in cases:
        out = _orch(
            "submit", str(job), "--cluster", "slurm", "--run-name", "big", *args, cwd=tmp_path
        )  # fmt: skip
        assert out.returncode == 2, (args, out.stderr[-2000:])
        assert named in out.stderr, (args, out.stderr[-2000:])
        assert "does not fit the allocation (--nodes" in out.stderr
        assert "ask for more with --nodes, --cpus-per-task or --gpus-per-node" in out.stderr
        assert not (tmp_path / "runs" / "big").exists()
    # What fits: two nodes of one CPU hold the two workers (a dry run prints the script).
    out = _orch(
        "submit", str(job), "--cluster", "slurm", "--run-name", "fits", "--nodes", "2",
        "--cpus-per-task", "1", "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0 and "#SBATCH --nodes=2" in out.stdout, out.stderr[-2000:]


# ---- the dashboard link and Ray's token: how to get in, never the token itself ------------

TOKEN = "0123456789abcdef-not-a-real-token"


def test_the_batch_script_says_where_the_dashboard_token_comes_from(tmp_path: Path) -> None:
    script = render_sbatch(CASES["cpu_one_node"])
    start = script.index("# The dashboard asks")
    lines = script[start : script.index("\n\n", start)]
    out = subprocess.run(
        ["bash", "-c", lines],
        env={"PATH": "/usr/bin:/bin", "RAY_AUTH_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "`/opt/orch/.venv/bin/ray get-auth-token` prints it" in out
    assert "export RAY_AUTH_TOKEN before submitting to log in" in out
    assert TOKEN not in out and all(line.startswith("orch: ") for line in out.splitlines())


@pytest.mark.parametrize("mode", [None, "token", "disabled"])
def test_the_dashboard_link_says_how_to_get_past_the_token_prompt(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str | None
) -> None:
    import logging
    import sys
    from types import SimpleNamespace

    import ray

    from orchestrator.launch.submit import start_ray

    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    if mode is None:  # Ray 2.60's default: token authentication on
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    else:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    started: dict[str, object] = {}

    def init(**kw: object) -> SimpleNamespace:
        started.update(kw)
        return SimpleNamespace(dashboard_url="127.0.0.1:8266")  # what ray.init returns

    monkeypatch.setattr(ray, "init", init)
    spec = SimpleNamespace(
        ray_address=None,
        training=SimpleNamespace(num_workers=2, cpus_per_worker=1.0),
        evaluation=SimpleNamespace(max_concurrent=1, cpus_per_task=1.0),
    )
    with caplog.at_level(logging.INFO, logger="orch.submit"):
        start_ray(spec, dashboard=True)  # type: ignore[arg-type]
    assert started["include_dashboard"] is True and started["num_cpus"] == 3
    [message] = [r.getMessage() for r in caplog.records if "dashboard" in r.getMessage()]
    assert message.startswith("Ray dashboard: http://127.0.0.1:8266")
    hint = f"`{Path(sys.executable).with_name('ray')} get-auth-token`"
    assert (hint in message) is (mode != "disabled"), message
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("setting", "nodes", "chosen"),
    [("auto", None, "PACK"), ("auto", "1", "PACK"), ("auto", "4", "SPREAD"),
     ("PACK", "4", "PACK"), ("SPREAD", None, "SPREAD")],
)  # fmt: skip
def test_auto_placement_spreads_over_the_nodes_of_a_multi_node_allocation(
    setting: str, nodes: str | None, chosen: str
) -> None:
    """The rendered allocation tells the controller its node count (ORCH_RAY_NODES); with it,
    training.placement_strategy = "auto" spreads the workers over those nodes."""
    from orchestrator.launch.train_run import placement_strategy

    script = render_sbatch(CASES["gpu_four_nodes"])
    assert 'export ORCH_RAY_NODES="$SLURM_JOB_NUM_NODES"' in script
    env = {} if nodes is None else {"ORCH_RAY_NODES": nodes}
    assert placement_strategy(setting, env) == chosen


def test_jobs_never_share_ports_and_stay_below_the_ephemeral_range() -> None:
    """The rendered script's port arithmetic, run by bash for 2,500 consecutive job ids: each
    job takes PORT..PORT+4 (head, dashboard, client, two dashboard agents); no two of them
    share a port (ids 31 and 32 did, on one node, when PORT was 20000 + id), and none reaches
    Linux's ephemeral range."""
    script = render_sbatch(CASES["cpu_one_node"])
    (line,) = [x for x in script.splitlines() if x.startswith("PORT=")]
    used = [x for x in script.splitlines() if "PORT + " in x]
    offsets = {int(n) for x in used for n in re.findall(r"PORT \+ (\d+)", x)}
    assert offsets == {1, 2, 3, 4}
    out = subprocess.run(
        ["bash", "-c", f'for SLURM_JOB_ID in $(seq 1000 3499); do {line}; echo "$PORT"; done'],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    ports = [int(p) + k for p in out for k in range(5)]
    assert len(out) == 2500 and len(set(ports)) == len(ports)
    assert min(ports) >= 20000 and max(ports) < 32768
