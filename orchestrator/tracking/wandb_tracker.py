"""The Weights & Biases tracker. `wandb` is imported only when one is created.

Steps: training rows carry "train/step", eval rows "eval/step" (the training step of
the evaluated checkpoint) and final rows "final/step"; `define_metric` makes each
family plot against its own step metric. `step=` is never passed to `run.log`, so
wandb's internal `_step` just counts rows and never goes backwards, however late or
out of order eval results arrive.

The run id is derived from the run name, so a restarted controller (same run
directory, same run name) continues the same wandb run (`resume="allow"`). In offline
mode each start writes its own `run_dir/wandb/offline-run-*` directory; `wandb sync`
uploads the files of one run in order of start time.

`finish()` also shuts wandb's service down, so the offline files are complete when it
returns. A tracker must never bring the run down: once a logging call fails, the error is
logged and the tracker stops logging (the run directory holds everything; see
`orch results`). Creating the tracker may raise.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from orchestrator.contract.errors import SpecError
from orchestrator.tracking.base import (
    EVAL,
    FINAL,
    TRAIN,
    LoggedState,
    prefixed,
    register_tracker,
)
from orchestrator.tracking.wandb_file import logged_state

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

    from orchestrator.contract.layout import RunDir
    from orchestrator.contract.spec import JobSpec

logger = logging.getLogger(__name__)

MAX_ID_LEN = 64
_ID_BAD_CHARS = re.compile(r"[^A-Za-z0-9_-]")

# wandb settings for a quiet controller: no console capture (the controller has its own
# log files), no system metrics sampling, no terminal output. Names wandb does not know
# (another wandb version) are dropped.
QUIET_SETTINGS: dict[str, Any] = {
    "console": "off",
    "x_disable_stats": True,
    "silent": True,
}

_FAILED = (
    "wandb tracker: %s failed; no more tracking for this run "
    "(the run directory has every result: see `orch results`)"
)


def wandb_run_id(run_name: str) -> str:
    """A stable wandb run id for `run_name`, using only [A-Za-z0-9_-].

    The name itself when it is already valid (and at most MAX_ID_LEN long); otherwise the
    sanitized, truncated name plus a short hash of the full name, so that names differing
    only in replaced characters still get different ids.
    """
    clean = _ID_BAD_CHARS.sub("-", run_name)
    if clean == run_name and 0 < len(clean) <= MAX_ID_LEN:
        return clean
    digest = hashlib.sha1(run_name.encode()).hexdigest()[:8]
    return f"{clean[: MAX_ID_LEN - 9]}-{digest}" if clean else digest


@register_tracker("wandb")
class WandbTracker:
    @classmethod
    def from_spec(cls, spec: JobSpec, rundir: RunDir) -> Self:
        """The run's wandb run (offline or online, as ``tracking.mode`` says)."""
        mode = spec.tracking.mode
        if mode == "disabled":
            raise SpecError('tracking.mode = "disabled": use the "null" tracker')
        return cls(
            run_dir=rundir.path,
            run_name=rundir.name,
            project=spec.tracking.project,
            mode=mode,
            config=spec.to_toml_dict(),
            entity=spec.tracking.entity,
            tags=spec.tracking.tags,
        )

    def __init__(
        self,
        run_dir: Path,
        run_name: str,
        project: str,
        mode: Literal["offline", "online"],
        config: dict[str, Any],
        entity: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        import wandb

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = wandb_run_id(run_name)
        known = wandb.Settings.model_fields
        settings = {k: v for k, v in QUIET_SETTINGS.items() if k in known}
        if dropped := sorted(set(QUIET_SETTINGS) - set(settings)):
            logger.debug("wandb %s has no settings %s", wandb.__version__, dropped)

        # Before this start adds its own file: what earlier starts of the run really wrote.
        self.durable: LoggedState | None = (
            logged_state(self.run_dir / "wandb", self.run_id) if mode == "offline" else None
        )
        started = time.monotonic()
        quiet = wandb.Settings(**settings)
        # wandb's own terminal messages ("wandb: WARNING ...") follow process-wide settings
        # made when wandb is first set up, not the run's: set wandb up now, then send those
        # messages to our logger instead of stderr (the "wandb" logger does not propagate).
        wandb.setup(quiet)
        wandb.termsetup(quiet, logger.getChild("wandb"))
        self.run: Run = wandb.init(
            dir=str(self.run_dir),
            id=self.run_id,
            name=run_name,
            project=project,
            entity=entity,
            tags=tags,
            mode=mode,
            config=config,
            resume="allow",
            settings=quiet,
        )
        for prefix in (TRAIN, EVAL, FINAL):
            self.run.define_metric(f"{prefix}/step")
            self.run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")
        logger.info(
            "wandb run %s (%s, id %s) started in %.1f s; files under %s%s",
            run_name,
            mode,
            self.run_id,
            time.monotonic() - started,
            self.run_dir / "wandb",
            f"; {self.run.url}" if mode == "online" else "",
        )
        self._failed = False
        self._finished = False
        # wandb's summary keeps the last value logged; eval rows arrive out of order, so
        # the summary is put back to the row of the newest checkpoint after an older one.
        self._eval_newest: tuple[int, dict[str, Any]] | None = None

    def _guard(self, what: str) -> bool:
        if self._finished:
            logger.warning("wandb tracker: %s after finish, ignored", what)
            return False
        return not self._failed

    def _log(self, what: str, row: dict[str, Any]) -> None:
        if not self._guard(what):
            return
        try:
            self.run.log(row)  # never step=: eval steps go backwards, _step must not
        except Exception:
            logger.exception(_FAILED, what)
            self._failed = True

    def log_train(self, step: int, metrics: Mapping[str, float]) -> None:
        self._log("log_train", prefixed(TRAIN, step, metrics))

    def log_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        row = prefixed(EVAL, step, metrics)
        self._log("log_eval", row)
        if self._eval_newest is None or step >= self._eval_newest[0]:
            self._eval_newest = (step, row)
        else:
            self.summary(self._eval_newest[1])

    def log_final(self, step: int, metrics: Mapping[str, float]) -> None:
        row = prefixed(FINAL, step, metrics)
        self._log("log_final", row)
        self.summary(row)

    def summary(self, values: Mapping[str, Any]) -> None:
        if not self._guard("summary"):
            return
        try:
            self.run.summary.update(dict(values))
        except Exception:
            logger.exception(_FAILED, "summary")
            self._failed = True

    def finish(self, exit_code: int = 0) -> None:
        """Finish the run, then shut this process's wandb service down.

        `run.finish()` returns before wandb-core has closed the run's `.wandb` file (its
        last block can still be unwritten); `wandb.teardown()` waits for the service to
        exit, so once this returns the offline files are complete. It ends any other
        wandb run of this process too: only the controller uses wandb, through one tracker.
        """
        if self._finished:
            return
        self._finished = True
        import wandb

        started = time.monotonic()
        try:
            self.run.finish(exit_code=exit_code)
        except Exception:
            logger.exception("wandb tracker: finish failed")
        try:
            wandb.teardown(exit_code)
        except (Exception, SystemExit):  # teardown exits when the service failed
            logger.exception("wandb tracker: wandb service shutdown failed")
            return
        logger.info(
            "wandb run %s finished (exit code %d) in %.1f s",
            self.run_id,
            exit_code,
            time.monotonic() - started,
        )
