"""close_process_group: ranks leave torch.distributed together, and the group is gone (its gloo
threads joined) before the interpreter finalizes. Two real processes on gloo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.distributed import run_ranks

CLOSE = """
import gc, json, sys, time, torch
import torch.distributed as dist
from tests.helpers.distributed import live_gloo_threads
from workers.distributed import close_process_group
store, rank, world = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def main() -> dict:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    t = torch.ones(3)
    dist.all_reduce(t)
    during = live_gloo_threads()
    if rank == 1:
        time.sleep(1.0)  # the last rank to arrive
    arrived = time.time()
    close_process_group()
    left = time.time()
    close_process_group()  # a second close is a no-op
    return {"sum": t.tolist(), "during": during, "arrived": arrived, "left": left,
            "closed": not dist.is_initialized()}


result = main()
gc.collect()
print(json.dumps(result | {"after": live_gloo_threads()}))
"""


@pytest.mark.slow  # two processes importing torch: ~7 s
def test_ranks_close_together_and_leave_no_gloo_thread(tmp_path: Path) -> None:
    script = tmp_path / "close.py"
    script.write_text(CLOSE)
    r0, r1 = (json.loads(out.strip().splitlines()[-1]) for out in run_ranks(script, world=2))
    assert r0["sum"] == r1["sum"] == [2.0, 2.0, 2.0]  # the group worked
    assert r0["during"] > 0 and r1["during"] > 0  # and ran gloo threads
    # Rank 0 waited in the barrier for rank 1, however late it came.
    assert r0["left"] >= r1["arrived"]
    assert r0["closed"] and r1["closed"]
    assert r0["after"] == r1["after"] == 0
