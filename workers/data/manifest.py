"""Classification manifests: JSONL lines ``{"image_path", "label", "dataset_name"[, "id"]}``.

Every problem is reported with its file and line and nothing is clamped or skipped: a manifest
with one bad row is rejected whole, before any compute is spent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import DataError

REQUIRED = ("image_path", "label", "dataset_name")


@dataclass(frozen=True)
class Sample:
    id: str
    image_path: Path
    label: int
    dataset: str


def read_manifest(
    path: Path, dataset: str, num_classes: int, *, max_errors: int = 20
) -> list[Sample]:
    """Read and check one manifest; raise DataError listing up to max_errors problems."""
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (datasets.{dataset})")
    samples: list[Sample] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    with path.open() as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{where}: malformed JSON ({e.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"{where}: expected a JSON object")
                continue
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                problems.append(f"{where}: missing field(s) {', '.join(missing)}")
                continue
            label = row["label"]
            if isinstance(label, bool) or not isinstance(label, int):
                problems.append(f"{where}: label must be an integer, got {label!r}")
                continue
            if not 0 <= label < num_classes:
                problems.append(
                    f"{where}: label {label} outside [0, {num_classes}) of dataset {dataset}"
                )
                continue
            if row["dataset_name"] != dataset:
                problems.append(
                    f"{where}: dataset_name {row['dataset_name']!r} but the manifest is "
                    f"configured as datasets.{dataset}"
                )
                continue
            image = Path(row["image_path"])
            if not image.is_absolute():
                image = (path.parent / image).resolve()
            sid = str(row.get("id", f"{dataset}:{path.name}:{lineno}"))
            if sid in seen:
                problems.append(f"{where}: duplicate id {sid!r} (first on line {seen[sid]})")
                continue
            seen[sid] = lineno
            samples.append(Sample(sid, image, label, dataset))
    if problems:
        shown = "\n  ".join(problems[:max_errors])
        more = f"\n  ... and {len(problems) - max_errors} more" if len(problems) > max_errors else ""
        raise DataError(f"{len(problems)} problem(s) in {path}:\n  {shown}{more}")
    if not samples:
        raise DataError(f"{path}: manifest has no samples (datasets.{dataset})")
    return samples
