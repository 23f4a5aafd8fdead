"""Wait on a condition, never a fixed time: a loaded machine is slow, not wrong."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.2
) -> float:
    """Call ``condition`` every ``interval`` s until it is truthy; return the seconds waited.
    AssertionError naming ``what`` after ``timeout`` s; give a deadline generous enough for a
    machine under load, it costs nothing when the condition comes true early."""
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - t0
