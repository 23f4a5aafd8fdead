"""Finding plugins: modules that register dataset kinds and metrics when imported.

Three sources, in order: the entry points of the ``orch.plugins`` group (orch's own
``workers.plugins`` is one, declared in pyproject.toml; an installed package adds its own the
same way), then the modules named in a job's ``plugins = [...]``. Every process that reads a
spec (the controller, a training worker, an eval part) loads the same plugins before it
validates the spec, so a kind defined outside orch works everywhere.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from importlib.metadata import entry_points

from orchestrator.contract.errors import SpecError

logger = logging.getLogger("orch.plugins")
GROUP = "orch.plugins"
# orch's own kinds and metrics, also when orch runs from a checkout that is not pip-installed
# (its entry points then do not exist).
BUILTIN = "workers.plugins"
_loaded: set[str] = set()
_entry_points: list[str] | None = None


def _installed() -> list[str]:
    """The ``orch.plugins`` entry points, read once per process: scanning every installed
    distribution's metadata costs milliseconds, and the registries call this on every lookup
    (the controller merging 1,000 steps spent minutes here)."""
    global _entry_points
    if _entry_points is None:
        _entry_points = [ep.value for ep in entry_points(group=GROUP)]
    return _entry_points


def load_plugins(modules: Iterable[str] = ()) -> None:
    """Import the plugin modules not imported yet (entry points first, then ``modules``)."""
    names = [BUILTIN, *_installed(), *modules]
    for name in names:
        if name in _loaded:
            continue
        try:
            importlib.import_module(name.partition(":")[0])
        except ImportError as e:
            raise SpecError(
                f"plugins: cannot import {name!r} ({e}); it must be importable from every "
                "process of the run (installed, or on PYTHONPATH)"
            ) from e
        _loaded.add(name)
        logger.debug("plugin %s loaded", name)
