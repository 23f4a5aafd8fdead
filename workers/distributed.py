"""Leaving torch.distributed cleanly: every process that opens a process group closes it.

Why it matters on CPU (gloo): each group runs C++ worker threads that execute the collectives.
Such a thread can still hold the last collective's tensors for a moment after the collective
returned; if it drops them once interpreter finalization has begun, freeing their Python objects
asks for the GIL, Python ends the thread in the middle of a C++ destructor, and the process dies
with "terminate called without an active exception" (SIGABRT, exit -6). It takes a descheduled
thread to hit that window, so it shows only on a loaded machine. Closing the groups while the
interpreter is fully alive removes the window: once the last reference to a group goes, its
threads are joined.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import torch.distributed as dist


def close_process_group(*engines: Any) -> None:
    """Close this process's torch.distributed groups, after every rank got here.

    All ranks meet in a barrier first, so that none tears its group down while a peer is still
    inside a collective with it; call it where every rank arrives (the normal end of training),
    not on an error path where a peer may never come. ``engines`` (DeepSpeed engines) release
    their hooks and buffers while communication still works. When DeepSpeed wraps the groups,
    they are destroyed through it, which also drops DeepSpeed's module-level references to them
    (else they, and their threads, live until interpreter exit). A no-op when no group is open.
    """
    if not dist.is_initialized():
        return
    dist.barrier()
    for engine in engines:
        engine.destroy()
    ds_comm = sys.modules.get("deepspeed.comm.comm")
    backend = getattr(ds_comm, "cdb", None)
    if ds_comm is not None and backend is not None and backend.is_initialized():
        ds_comm.destroy_process_group()
    else:
        dist.destroy_process_group()
    _release_pinned_default_group()


def _release_pinned_default_group() -> None:
    """torch.distributed.nn.functional's collectives default to ``group=group.WORLD``, evaluated
    when that module is imported: imported after the group exists (DeepSpeed's engine imports
    it), they hold the default group forever and its threads are never joined. Such a default
    becomes None, which these functions read as "the default group" when called."""
    module = sys.modules.get("torch.distributed.nn.functional")
    if module is None:
        return
    for fn in vars(module).values():
        if not isinstance(fn, types.FunctionType):
            continue
        if fn.__defaults__:
            fn.__defaults__ = tuple(_unpinned(v) for v in fn.__defaults__)
        if fn.__kwdefaults__:
            fn.__kwdefaults__ = {k: _unpinned(v) for k, v in fn.__kwdefaults__.items()}


def _unpinned(value: Any) -> Any:
    return None if isinstance(value, dist.ProcessGroup) else value
