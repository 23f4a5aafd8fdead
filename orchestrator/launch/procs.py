"""The processes a controller started (embedded Ray: GCS, raylet, agents, workers), recorded in
the run directory so that the next controller of the run can reap what a SIGKILL left behind.

Ray ties most of its processes to the driver's life, but not all (its runtime-env and
dashboard agents outlive a SIGKILLed driver). The resumed controller holds the run lock, so the
old one is known to be dead; a recorded process still alive with the same start time is a
leftover and is killed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import psutil

from orchestrator.contract.atomic import atomic_write_json

logger = logging.getLogger("orch.procs")


class ProcessRecorder:
    """Records this process's descendants (pid, start time) every few seconds until stopped."""

    def __init__(self, path: Path, every_s: float = 2.0) -> None:
        self.path = path
        self.every_s = every_s
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="orch-procs", daemon=True)

    def start(self) -> ProcessRecorder:
        self.record()
        self._thread.start()
        return self

    def record(self) -> None:
        before = len(self.seen)
        for p in psutil.Process(os.getpid()).children(recursive=True):
            try:
                self.seen.setdefault(p.pid, p.create_time())
            except psutil.NoSuchProcess:
                continue
        if len(self.seen) != before:
            atomic_write_json(self.path, {str(pid): t for pid, t in self.seen.items()})

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.record()

    def stop(self) -> None:
        self._stop.set()


def reap_leftovers(path: Path) -> int:
    """Kill recorded processes that are still alive with the same start time; return the count."""
    if not path.is_file():
        return 0
    recorded = {int(pid): float(t) for pid, t in json.loads(path.read_text()).items()}
    victims = []
    for pid, started in recorded.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - started) < 0.01:
                victims.append(p)
        except psutil.NoSuchProcess:
            continue
    for p in victims:
        logger.warning("killing leftover process %d (%s) of a previous controller", p.pid, p.name())
        p.kill()
    psutil.wait_procs(victims, timeout=10)
    path.unlink()
    return len(victims)
