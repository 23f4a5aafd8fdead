"""The fake SLURM's state and commands, in the spirit of submitit's own mocked ``sbatch`` (its
tests patch subprocess): here real executables on PATH, so the code under test runs the same
subprocess calls it runs against a real cluster.

State lives in ``$FAKE_SLURM_DIR``:
  next_id                  the next job id
  jobs/<job id>.json       one per job or array element ("12" or "12_0"): name, state, ...
  submissions/<id>.json    what each sbatch call saw: argv, script, options, the environment
  calls.jsonl              every command run (name and argv), in order

Jobs never run: a test moves them through states with ``FakeSlurm.set_state`` (or ``forget``,
as SLURM does after MinJobAge) and writes submitit's result files itself. The commands accept
the options orch and submitit use and fail loudly on anything else, so an unexpected call
shows up as a test failure rather than as a silently wrong answer.

Standard library only: the executables run it with whatever python3 the test names.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

STATE_ENV = "FAKE_SLURM_DIR"
HERE = Path(__file__).resolve().parent
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"}
INVALID_ID = "slurm_load_jobs error: Invalid job id specified"


class FakeSlurm:
    """A test's handle on the fake's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("jobs", "submissions"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def environ(self, environ: dict[str, str], python: str = sys.executable) -> dict[str, str]:
        """``environ`` with these fakes first on PATH and this state directory."""
        return environ | {
            "PATH": f"{HERE}{os.pathsep}{environ.get('PATH', '')}",
            STATE_ENV: str(self.root),
            "FAKE_SLURM_PYTHON": python,
        }

    # -- jobs
    def job(self, job_id: str) -> dict[str, Any]:
        return _read(self.root / "jobs" / f"{job_id}.json")

    def jobs(self) -> dict[str, dict[str, Any]]:
        return {p.stem: _read(p) for p in sorted((self.root / "jobs").glob("*.json"))}

    def set_state(self, job_id: str, state: str, reason: str = "None") -> None:
        job = self.job(job_id)
        job |= {"state": state, "reason": reason}
        _write(self.root / "jobs" / f"{job_id}.json", job)

    def squeue_fails(self, fails: bool = True) -> None:
        """Make squeue time out (exit 1, nothing on stdout), as with a busy slurmctld."""
        (self.root / "squeue_fails").touch() if fails else (self.root / "squeue_fails").unlink()

    def forget(self, job_id: str) -> None:
        """What SLURM does MinJobAge seconds after a job ended: no command knows it any more."""
        (self.root / "jobs" / f"{job_id}.json").unlink()

    # -- what was run
    def submissions(self) -> list[dict[str, Any]]:
        paths = sorted((self.root / "submissions").glob("*.json"), key=lambda p: int(p.stem))
        return [_read(p) for p in paths]

    def calls(self, command: str | None = None) -> list[list[str]]:
        path = self.root / "calls.jsonl"
        if not path.is_file():
            return []
        calls = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [c["argv"] for c in calls if command is None or c["command"] == command]


def _read(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(path.read_text())
    return value


def _write(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    tmp.replace(path)


def _state_dir() -> Path:
    root = os.environ.get(STATE_ENV)
    if not root:
        _fail(f"{STATE_ENV} is not set: the fake SLURM keeps its state there", 2)
    return Path(root)


def _fail(message: str, code: int = 1) -> NoReturn:
    sys.stderr.write(message + "\n")
    raise SystemExit(code)


VALUED = {"o", "j", "u", "p"}  # short options that take a value; the others are flags


def _options(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """``--key=value`` / ``--flag`` / ``-x [value]`` options (a repeated ``-j`` adds ids), and
    the positional arguments."""
    options: dict[str, str] = {}
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        if arg.startswith("--"):
            key, _, value = arg[2:].partition("=")
            options[key] = value
        elif arg.startswith("-") and len(arg) == 2 and arg[1] in VALUED:
            value = next(it, "")
            options[arg[1]] = f"{options[arg[1]]},{value}" if arg[1] in options else value
        elif arg.startswith("-") and len(arg) == 2:
            options[arg[1]] = ""
        else:
            rest.append(arg)
    return options, rest


def _ids(spec: str, jobs: dict[str, dict[str, Any]]) -> list[str]:
    """Job ids named by ``12``, ``12_0`` or a comma list of those; an array's id names all of
    its elements."""
    out = []
    for one in filter(None, spec.split(",")):
        if one in jobs:
            out.append(one)
        out += sorted(
            (j for j, v in jobs.items() if str(v["array_job_id"]) == one and j != one),
            key=lambda j: jobs[j]["array_task_id"],
        )
    return out


# Some of sbatch's input variables (man sbatch, "INPUT ENVIRONMENT VARIABLES"), by option.
INPUT_VARIABLES = {
    "account": "SBATCH_ACCOUNT",
    "array": "SBATCH_ARRAY_INX",
    "job-name": "SBATCH_JOB_NAME",
    "mem": "SBATCH_MEM_PER_NODE",
    "mem-per-cpu": "SBATCH_MEM_PER_CPU",
    "partition": "SBATCH_PARTITION",
    "qos": "SBATCH_QOS",
    "time": "SBATCH_TIMELIMIT",
}


def sbatch(args: list[str], state: FakeSlurm) -> None:
    options, rest = _options(args)
    if len(rest) != 1:
        _fail(f"fake sbatch: expected one script, got {rest}")
    script = Path(rest[0])
    text = script.read_text()
    directives: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH"):
            for word in shlex.split(line[len("#SBATCH") :]):
                key, _, value = word.lstrip("-").partition("=")
                directives[key] = value
    # sbatch's precedence: command line, then SBATCH_* input variables, then #SBATCH lines.
    effective = dict(directives)
    for key, variable in INPUT_VARIABLES.items():
        if variable in os.environ:
            effective[key] = os.environ[variable]
    effective |= {k: v for k, v in options.items() if k != "parsable"}
    counter = state.root / "next_id"
    base = int(counter.read_text()) if counter.is_file() else 1
    elements: list[int | None] = [None]
    if "array" in effective:
        first, _, last = effective["array"].split("%")[0].partition("-")
        elements = list(range(int(first), int(last or first) + 1))
    counter.write_text(str(base + len(elements)))
    ids = []
    for offset, task in enumerate(elements):
        job_id = str(base) if task is None else f"{base}_{task}"
        ids.append(job_id)
        job = {
            "job_id": job_id,
            "raw_id": base + offset,
            "array_job_id": base,
            "array_task_id": task,
            "name": effective.get("job-name", script.name),
            "partition": effective.get("partition", "debug"),
            "state": os.environ.get("FAKE_SLURM_START_STATE", "PENDING"),
            "reason": "None",
            "stderr": effective.get("error", ""),
        }
        _write(state.root / "jobs" / f"{job_id}.json", job)
    submission = {
        "argv": ["sbatch", *args],
        "script": text,
        "directives": directives,
        "effective": effective,
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "job_ids": ids,
    }
    _write(state.root / "submissions" / f"{base}.json", submission)
    sys.stdout.write(f"{base}\n" if "parsable" in options else f"Submitted batch job {base}\n")


def squeue(args: list[str], state: FakeSlurm) -> None:
    options, rest = _options(args)
    if rest or options.get("o", "%i") != "%i" or "h" not in options:
        _fail(f"fake squeue: only `squeue -h [-r] -o %i [-j IDS]` is scripted, got {args}")
    if (state.root / "squeue_fails").exists():  # e.g. slurmctld too busy to answer
        _fail("slurm_load_jobs error: Socket timed out on send/recv operation")
    jobs = state.jobs()
    wanted = _ids(options["j"], jobs) if "j" in options else sorted(jobs)
    if "j" in options and not wanted:
        _fail(INVALID_ID)
    live = [j for j in wanted if jobs[j]["state"] in ACTIVE]
    lines: list[str] = []
    if "r" not in options:  # pending elements of an array on one line, as SLURM prints them
        arrays: dict[int, list[int]] = {}
        for j in live:
            if jobs[j]["state"] == "PENDING" and jobs[j]["array_task_id"] is not None:
                arrays.setdefault(jobs[j]["array_job_id"], []).append(jobs[j]["array_task_id"])
        for base, tasks in arrays.items():
            lines.append(f"{base}_[{min(tasks)}-{max(tasks)}]")
        live = [j for j in live if not (jobs[j]["state"] == "PENDING" and "_" in j)]
    sys.stdout.write("".join(f"{line}\n" for line in [*live, *lines]))


def scontrol(args: list[str], state: FakeSlurm) -> None:
    words = [a for a in args if a != "-o"]
    if words[:2] != ["show", "job"] or len(words) != 3:
        _fail(f"fake scontrol: only `scontrol [-o] show job ID` is scripted, got {args}")
    jobs = state.jobs()
    if words[2] not in jobs:
        _fail(INVALID_ID)
    j = jobs[words[2]]
    fields = [f"JobId={j['raw_id']}"]
    if j["array_task_id"] is not None:
        fields += [f"ArrayJobId={j['array_job_id']}", f"ArrayTaskId={j['array_task_id']}"]
    fields += [
        f"JobName={j['name']}",
        f"JobState={j['state']}",
        f"Reason={j['reason']}",
        f"Partition={j['partition']}",
        f"StdErr={j['stderr']}",
    ]
    sys.stdout.write((" " if "-o" in args else "\n   ").join(fields) + "\n")


def scancel(args: list[str], state: FakeSlurm) -> None:
    options, rest = _options(args)
    if not rest:
        _fail("fake scancel: no job id given")
    jobs = state.jobs()
    code = 0
    for one in rest:
        targets = _ids(one, jobs)
        if not targets:
            sys.stderr.write(f"scancel: error: Invalid job id {one}\n")
            code = 1
        for j in targets:
            if jobs[j]["state"] not in ACTIVE:
                sys.stderr.write(
                    f"scancel: error: Kill job error on job id {j}: "
                    "Job/step already completing or completed\n"
                )
                code = 1
            elif "signal" not in options:  # a signal alone leaves the job running
                state.set_state(j, "CANCELLED", f"cancelled by {os.environ.get('USER', 'root')}")
    raise SystemExit(code)


def sacct(args: list[str], state: FakeSlurm) -> None:
    options, rest = _options(args)
    ids = options.get("j") or options.get("jobs") or ""
    fields = (options.get("o") or options.get("format") or "JobID,State").split(",")
    jobs = state.jobs()
    columns = {
        "JobID": lambda j: j["job_id"],
        "State": lambda j: j["state"],
        "JobName": lambda j: j["name"],
        "NodeList": lambda j: "fakenode",
        "ExitCode": lambda j: "0:0" if j["state"] in ("COMPLETED", *ACTIVE) else "1:0",
    }
    unknown = [f for f in fields if f not in columns]
    if unknown or rest:
        _fail(f"fake sacct: fields {unknown} / arguments {rest} are not scripted")
    lines = [] if "n" in options or "noheader" in options else ["|".join(fields)]
    for j in _ids(ids, jobs) if ids else sorted(jobs):
        lines.append("|".join(columns[f](jobs[j]) for f in fields))
    sys.stdout.write("".join(f"{line}\n" for line in lines))


COMMANDS = {
    "sbatch": sbatch,
    "squeue": squeue,
    "scontrol": scontrol,
    "scancel": scancel,
    "sacct": sacct,
}


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        _fail(f"fake SLURM: {command} is not scripted (srun only exists for submitit's check)")
    state = FakeSlurm(_state_dir())
    with (state.root / "calls.jsonl").open("a") as log:
        log.write(json.dumps({"command": command, "argv": [command, *args]}) + "\n")
    COMMANDS[command](args, state)


if __name__ == "__main__":
    main(sys.argv[1:])
