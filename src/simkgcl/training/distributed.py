"""Data-parallel processes: the device of each, torchrun's process group, rank-0 broadcasts.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), a run joins the process group
(NCCL on CUDA, each process on ``cuda:LOCAL_RANK``; gloo on CPU) for the duration of
:func:`process_group`. Leaving is deterministic and happens before the interpreter exits:

* on success every rank waits at a final barrier, then destroys the group, so no rank tears down
  its connections while another is still inside a collective (tearing down from an ``atexit``
  hook did exactly that and killed a finished rank with SIGABRT);
* on an exception the rank destroys its group at once, without the barrier (the other ranks may
  be inside a different collective and would never reach it) and re-raises. Its peers' pending
  collectives then fail instead of waiting, and ``torchrun`` stops the remaining workers when one
  exits with an error, so one failing rank never leaves the others hanging.

The block that joins the group owns it; nested blocks (several runs in one process, e.g. one per
seed) reuse it, and a group a caller initialised itself is left to that caller.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import torch
from torch import nn

from simkgcl.errors import ArtifactError, ConfigError, SimKGCLError

logger = logging.getLogger("simkgcl.training")

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the data-parallel processes (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when absent or unreadable)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA request without CUDA is an error.

    Under torchrun (``LOCAL_RANK`` set), ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK``.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ and env_world_size() > 1:
        name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config key 'device': {name!r} requested but CUDA is not available "
                              "(use device=cpu or device=auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"config key 'device': {name!r} but only "
                              f"{torch.cuda.device_count()} CUDA device(s) exist")
    return device


def current_group() -> ProcessGroup:
    """The group this process has joined (rank 0 of 1 if none)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return ProcessGroup(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return ProcessGroup()


def is_main_process() -> bool:
    """Rank 0 of the joined group, or of torchrun's launch (``RANK``) once the group is left."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return os.environ.get("RANK", "0").strip() in ("", "0")


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[ProcessGroup]:
    """Join torchrun's process group for the block (see the module docstring for leaving it).

    Without torchrun (or with ``WORLD_SIZE=1``) this yields rank 0 of 1 and does nothing.
    """
    if (not torch.distributed.is_available() or torch.distributed.is_initialized()
            or env_world_size() <= 1):
        yield current_group()
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend=backend, init_method="env://")
    group = current_group()
    try:
        yield group
    except BaseException:
        _leave(barrier=False, device=device)
        raise
    _leave(barrier=True, device=device)


def _leave(*, barrier: bool, device: torch.device) -> None:
    if not torch.distributed.is_initialized():
        return
    try:
        if barrier:
            if device.type == "cuda":
                torch.distributed.barrier(device_ids=[device.index or 0])
            else:
                torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def end_worker_process(code: int) -> NoReturn:
    """End a torchrun worker with ``code`` once its work is done: flush, then ``os._exit``.

    Why not a normal exit: gloo's run-loop threads outlive ``destroy_process_group`` (the C++
    group stays referenced), and a thread still releasing a finished collective's tensors must
    take the GIL to do it. If the interpreter is finalising at that moment, CPython ends that
    thread inside a C++ destructor and the process aborts with SIGABRT ("terminate called
    without an active exception"; gdb: ``ProcessGroupGloo::runLoop`` -> ``~AsyncAllreduceWork``
    -> ``take_gil`` -> ``PyThread_exit_thread``). Measured with a minimal 2-process script: 6
    aborts in 40 runs with the group left from an ``atexit`` hook, 1 in 40 with a final barrier
    and ``destroy_process_group``. Skipping finalisation removes the race. Nothing is lost: the
    run folder's files are written atomically and fsynced, and logging and the standard
    streams are flushed here.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def broadcast_from_main(value: T, group: ProcessGroup) -> T:
    """Rank 0's ``value`` on every rank (any picklable object; the value itself when alone)."""
    if not group.distributed:
        return value
    holder = [value if group.main else None]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]  # type: ignore[return-value]


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (call it on every rank)."""
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if torch.distributed.get_backend() == "nccl":
        value = value.cuda()
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def data_parallel(model: nn.Module, device: torch.device, group: ProcessGroup) -> nn.Module:
    """``model`` wrapped in DDP when there are several processes (``model`` itself otherwise).

    Buffers are the graph's index structures, built identically on every rank: they are not
    broadcast before every forward. Parameters that only a model's extra steps train (named in
    its ``ddp_ignored_parameters``; KGAT's TransR tables), computed identically on every rank,
    are left out of DDP: never all-reduced, so their gradients stay None in the batches' steps
    (``find_unused_parameters`` would not do: the extra steps' backward marks them as used).
    """
    if not group.distributed or not any(p.requires_grad for p in model.parameters()):
        return model  # nothing to synchronise (e.g. the pop model)
    ddp = nn.parallel.DistributedDataParallel
    no_buffer_sync: dict[str, Any] = ({"forward_sync_buffers": False}
                                      if "forward_sync_buffers" in inspect.signature(ddp).parameters
                                      else {"broadcast_buffers": False})
    ignored = list(getattr(model, "ddp_ignored_parameters", ()))
    if ignored:
        ddp._set_params_and_buffers_to_ignore_for_model(model, ignored)
    return ddp(model, device_ids=[device.index] if device.type == "cuda" else None,
               **no_buffer_sync)


def on_main(action: Callable[[], T], group: ProcessGroup) -> T:
    """Rank 0 runs ``action`` and every rank gets its result, or raises its error (so that no
    rank waits in a broadcast for a rank that failed)."""
    outcome: tuple[str, Any] = ("ok", None)
    failure: SimKGCLError | None = None
    if group.main:
        try:
            outcome = ("ok", action())
        except SimKGCLError as exc:
            failure, outcome = exc, ("error", str(exc))
    kind, value = broadcast_from_main(outcome, group)
    if kind == "error":
        raise failure or ArtifactError(value)
    return value


__all__ = ["ProcessGroup", "any_rank", "broadcast_from_main", "on_main", "current_group", "data_parallel",
           "end_worker_process", "env_world_size", "is_main_process", "process_group",
           "resolve_device"]
