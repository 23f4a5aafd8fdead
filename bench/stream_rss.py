"""Peak memory while streaming a 10-million-row manifest end to end through ``iter_rows``.

The manifest (classification rows: id, image_path, label, dataset_name) is written once as
Parquet and once as JSONL into a temporary folder, then each is streamed in a fresh subprocess
that counts rows and labels; the subprocess reports its peak RSS (ru_maxrss). Baseline: the
peak RSS of the same subprocess that imports the same modules and streams nothing.

    PYTHONPATH=. .venv/bin/python bench/stream_rss.py [--rows 10000000] [--quick]

``--quick``: 200,000 rows (the peak is then mostly the baseline's; it checks the path).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = 10_000_000
CHUNK = 1_000_000
CHILD = """
import json, sys, time
from pathlib import Path
import pyarrow.parquet  # noqa: F401  (imported in the baseline too)
from workers.data.manifest import iter_rows
t0 = time.perf_counter()
n = labels = 0
if sys.argv[1] != "-":
    for _, row in iter_rows(Path(sys.argv[1])):
        n += 1
        labels += row["label"]
# VmHWM: this process's own peak RSS (ru_maxrss would carry the parent's across exec)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
peak = int(hwm.split()[1]) / 1024
print(json.dumps({"rows": n, "labels": labels, "peak_mb": peak, "s": time.perf_counter() - t0}))
"""


def write(folder: Path, rows: int) -> tuple[Path, Path]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet, jsonl = folder / "m.parquet", folder / "m.jsonl"
    writer = None
    with jsonl.open("w") as f:
        for start in range(0, rows, CHUNK):
            idx = np.arange(start, min(rows, start + CHUNK))
            ids = [f"food/{i:08d}" for i in idx.tolist()]
            paths = [f"images/{i % 2000:04d}/{i:08d}.jpg" for i in idx.tolist()]
            labels = (idx % 2000).tolist()
            table = pa.table(
                {
                    "id": ids,
                    "image_path": paths,
                    "label": labels,
                    "dataset_name": ["food"] * len(ids),
                }
            )
            writer = writer or pq.ParquetWriter(parquet, table.schema)
            writer.write_table(table)
            f.writelines(
                f'{{"id": "{i}", "image_path": "{p}", "label": {y}, "dataset_name": "food"}}\n'
                for i, p, y in zip(ids, paths, labels, strict=True)
            )
    assert writer is not None
    writer.close()
    return parquet, jsonl


def stream(path: str) -> dict[str, float]:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", CHILD, path],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=ROWS)
    ap.add_argument("--quick", action="store_true", help="200,000 rows")
    args = ap.parse_args()
    rows = 200_000 if args.quick else args.rows
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        parquet, jsonl = write(Path(tmp), rows)
        write_s = time.perf_counter() - t0
        base = stream("-")
        pq_run, js_run = stream(str(parquet)), stream(str(jsonl))
    assert pq_run["rows"] == js_run["rows"] == rows and pq_run["labels"] == js_run["labels"]
    peak = max(pq_run["peak_mb"], js_run["peak_mb"])
    print(f"stream_rows={rows}")
    print(f"stream_write_s={write_s:.1f}")
    print(f"stream_rss_mb={peak:.0f}")
    print(f"stream_rss_mb_parquet={pq_run['peak_mb']:.0f}")
    print(f"stream_rss_mb_jsonl={js_run['peak_mb']:.0f}")
    print(f"stream_rss_mb_baseline={base['peak_mb']:.0f}")
    print(f"stream_rss_over_baseline={peak / base['peak_mb']:.2f}")
    print(f"stream_rows_per_s_parquet={rows / pq_run['s']:.0f}")
    print(f"stream_rows_per_s_jsonl={rows / js_run['s']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
