"""Disk use: bytes under a folder, and a size as a person reads it."""

from __future__ import annotations

import os
from pathlib import Path


def disk_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (not following links); 0 if it is gone."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue  # removed while we walked
    return total


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
