"""The tracker interface, plus the trackers that need no external service.

Only the controller process writes to a tracker. Metric keys are given without
their prefix ("loss", "digits/accuracy"); the tracker adds "train/", "eval/" or
"final/" and logs the matching step metric ("train/step", "eval/step",
"final/step") in the same row, so every row says which training step it is about
even when it arrives late or out of order.

Trackers are found by name: a tracker class registers itself with ``@register_tracker("name")``
and builds itself from the job spec (``from_spec``); ``orchestrator.tracking.make_tracker`` is
the one factory.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar, runtime_checkable

from orchestrator.contract.errors import SpecError

if TYPE_CHECKING:
    from orchestrator.contract.layout import RunDir
    from orchestrator.contract.spec import JobSpec

logger = logging.getLogger(__name__)

TRAIN = "train"
EVAL = "eval"
FINAL = "final"


def prefixed(prefix: str, step: int, metrics: Mapping[str, float]) -> dict[str, Any]:
    """`{"<prefix>/step": step, "<prefix>/<key>": value, ...}`: one tracker row.

    A metric named "step" would clash with the step metric: it is dropped (with a warning).
    """
    row: dict[str, Any] = {f"{prefix}/step": int(step)}
    for key, value in metrics.items():
        if key == "step":
            logger.warning("dropping metric %r at %s step %d: reserved name", key, prefix, step)
            continue
        row[f"{prefix}/{key}"] = value
    return row


@runtime_checkable
class Tracker(Protocol):
    def log_train(self, step: int, metrics: Mapping[str, float]) -> None:
        """Training metrics of `step`: logs "train/<key>" and "train/step"=step."""
        ...

    def log_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        """Eval results of the checkpoint at training step `step` (late, any order):
        logs "eval/<key>" and "eval/step"=step."""
        ...

    def log_final(self, step: int, metrics: Mapping[str, float]) -> None:
        """Full eval of the best checkpoint (at training step `step`): logs "final/<key>"
        and "final/step"=step, and sets the summary values "final/<key>" and "final/step"."""
        ...

    def summary(self, values: Mapping[str, Any]) -> None:
        """Set run summary values (e.g. best/step, best/metric, best/value)."""
        ...

    def finish(self, exit_code: int = 0) -> None:
        """End the run; later calls to finish are no-ops."""
        ...


@dataclass(frozen=True)
class LoggedState:
    """What a tracker holds durably: the last train step, the eval steps, the final eval."""

    train_step: int
    eval_steps: frozenset[int]
    final: bool


@runtime_checkable
class DurableTracker(Tracker, Protocol):
    """A tracker that can say what its store really holds (wandb's offline files), as read
    when it was created. A restarted controller trusts this over its own record of what it
    sent: rows logged just before a crash can be lost in the tracker's buffers. The controller
    checks for it with ``isinstance``; other trackers are trusted as they are."""

    durable: LoggedState | None
    """None: not known (e.g. wandb online), the controller's record is used."""


class RegisteredTracker(Tracker, Protocol):
    """What the registry holds: a tracker class that builds itself from the job spec."""

    @classmethod
    def from_spec(cls, spec: JobSpec, rundir: RunDir) -> Self:
        """The tracker of run ``rundir`` (project, mode and tags from ``spec.tracking``)."""
        ...


T = TypeVar("T", bound=type[RegisteredTracker])
_TRACKERS: dict[str, type[RegisteredTracker]] = {}


def register_tracker(name: str) -> Callable[[T], T]:
    """Class decorator: make the tracker class buildable as ``make_tracker(..., name)``."""

    def register(cls: T) -> T:
        known = _TRACKERS.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"tracker {name!r} is already registered ({known.__qualname__})")
        _TRACKERS[name] = cls
        return cls

    return register


def get_tracker_class(name: str) -> type[RegisteredTracker]:
    try:
        return _TRACKERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _TRACKERS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SpecError(
            f"unknown tracker {name!r}; {hint}known trackers: {', '.join(known_trackers())}"
        ) from None


def known_trackers() -> list[str]:
    return sorted(_TRACKERS)


@register_tracker("null")
class NullTracker:
    """Tracks nothing (tracking.mode = "disabled")."""

    @classmethod
    def from_spec(cls, spec: JobSpec, rundir: RunDir) -> Self:
        return cls()

    def log_train(self, step: int, metrics: Mapping[str, float]) -> None:
        pass

    def log_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        pass

    def log_final(self, step: int, metrics: Mapping[str, float]) -> None:
        pass

    def summary(self, values: Mapping[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


@register_tracker("memory")
class MemoryTracker:
    """Records every call, for tests.

    `train`, `eval` and `final` hold `(step, metrics)` in call order, with the keys as
    given (no prefix). `summaries` holds what a WandbTracker would set explicitly in the
    run summary: every `summary()` value, plus "final/<key>" and "final/step" from
    `log_final`.
    """

    def __init__(self) -> None:
        self.train: list[tuple[int, dict[str, float]]] = []
        self.eval: list[tuple[int, dict[str, float]]] = []
        self.final: list[tuple[int, dict[str, float]]] = []
        self.summaries: dict[str, Any] = {}
        self.finished: bool = False
        self.exit_code: int | None = None

    @classmethod
    def from_spec(cls, spec: JobSpec, rundir: RunDir) -> Self:
        return cls()

    def log_train(self, step: int, metrics: Mapping[str, float]) -> None:
        self.train.append((step, dict(metrics)))

    def log_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        self.eval.append((step, dict(metrics)))

    def log_final(self, step: int, metrics: Mapping[str, float]) -> None:
        self.final.append((step, dict(metrics)))
        self.summaries.update(prefixed(FINAL, step, metrics))

    def summary(self, values: Mapping[str, Any]) -> None:
        self.summaries.update(values)

    def finish(self, exit_code: int = 0) -> None:
        self.finished = True
        self.exit_code = exit_code


class CompositeTracker:
    """Fans every call out to several trackers, in order.

    One tracker failing does not keep the others from seeing the call: the error is
    logged and the first one is raised again once every tracker has been called.
    """

    def __init__(self, trackers: Iterable[Tracker]) -> None:
        self.trackers: list[Tracker] = list(trackers)

    def _each(self, what: str, *args: Any) -> None:
        error: Exception | None = None
        for tracker in self.trackers:
            try:
                getattr(tracker, what)(*args)
            except Exception as e:
                logger.exception("tracker %s: %s failed", type(tracker).__name__, what)
                error = error or e
        if error is not None:
            raise error

    def log_train(self, step: int, metrics: Mapping[str, float]) -> None:
        self._each("log_train", step, metrics)

    def log_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        self._each("log_eval", step, metrics)

    def log_final(self, step: int, metrics: Mapping[str, float]) -> None:
        self._each("log_final", step, metrics)

    def summary(self, values: Mapping[str, Any]) -> None:
        self._each("summary", values)

    def finish(self, exit_code: int = 0) -> None:
        self._each("finish", exit_code)
