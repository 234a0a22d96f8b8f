"""The process group of a torchrun run: rank facts, joining it once, and the few collectives the loop needs.

``torchrun --nproc_per_node N -m stm_probe ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``MASTER_ADDR/PORT`` in their environment; `init` joins them into one group
(gloo on the CPU; NCCL plus a gloo group for Python objects on GPUs, each rank on
``cuda:LOCAL_RANK``). The group is made once per process and kept for every later run in it (the
``compare`` command runs several analyses in one process); it is destroyed at exit.

Every exchange goes through `collective`: each rank runs its share of the work, rank 0 gathers
the results (or each rank's failure) and combines them, and rank 0's verdict is broadcast, so a
rank that fails makes every rank stop with the same one line naming it, instead of leaving the
others waiting. A process that dies outright is noticed by torchrun, which stops the others; a
rank that hangs is stopped by the group's timeout (``STM_PROBE_DIST_TIMEOUT`` seconds, default
1800). Outside torchrun (no ``WORLD_SIZE`` above 1) a run is rank 0 of 1 and no group is made.
"""
from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Any, Callable, Sequence, TypeVar

from ..errors import UsageError

T = TypeVar("T")
R = TypeVar("R")
TIMEOUT_ENV = "STM_PROBE_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800

_objects_group: Any = None  # the gloo group Python objects travel through (None: the default group)


class RankFailed(UsageError):
    """One rank failed; raised on every rank with the same one-line message naming it."""


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    """True in the process that writes files and prints (rank 0)."""
    return world()[0] == 0


def launched() -> bool:
    """True when torchrun started this process as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; 0 outside torchrun): its GPU."""
    return int(os.environ.get("LOCAL_RANK", 0))


def timeout() -> timedelta:
    """How long a collective waits for the slowest rank before the run stops."""
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        raise UsageError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds: unset it or give e.g. 1800") from None
    return timedelta(seconds=max(1.0, seconds))


def init(device_type: str = "cpu") -> bool:
    """Join torchrun's process group (once per process; later calls keep it). Returns True when
    this process is one of several. ``device_type`` 'cuda' uses NCCL (and gloo for Python
    objects) and puts this rank on ``cuda:LOCAL_RANK``; 'cpu' uses gloo."""
    global _objects_group
    if not launched():
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise UsageError("this torch build has no torch.distributed: run without torchrun")
    if dist.is_initialized():
        return True
    wait = timeout()
    if device_type == "cuda":
        torch.cuda.set_device(local_rank())
        dist.init_process_group(backend="nccl", timeout=wait)
        _objects_group = dist.new_group(backend="gloo", timeout=wait)
    else:
        dist.init_process_group(backend="gloo", timeout=wait)
        _objects_group = None
    atexit.register(shutdown)
    return True


def shutdown() -> None:
    """Leave the process group (at exit; safe to call twice or outside torchrun).

    Objects still holding the group are freed first: a DistributedDataParallel wrapper (from `train`)
    sits in a reference cycle, and left to the interpreter's teardown, after the group is destroyed,
    its reducer's threads could abort the process ('terminate called without an active exception')."""
    global _objects_group
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        import gc

        gc.collect()
        dist.destroy_process_group()
    _objects_group = None


def active() -> bool:
    """True when this process is one of several in an initialised group."""
    return world()[1] > 1 and _initialised()


def _initialised() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (picklable) as a list on rank 0 (rank order); None elsewhere."""
    import torch.distributed as dist

    rank, size = world()
    out: list[Any] | None = [None] * size if rank == 0 else None
    dist.gather_object(obj, out, dst=0, group=_objects_group)
    return out


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_objects_group)
    return box[0]


def barrier() -> None:
    """Wait until every rank gets here (no-op in one process)."""
    if active():
        import torch.distributed as dist

        dist.barrier(group=_objects_group)


def describe_failure(exc: BaseException) -> str:
    """One line for an exception: a UsageError's own message, else 'TypeName: message'."""
    text = str(exc) if isinstance(exc, UsageError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def collective(work: Callable[[], T], combine: Callable[[Sequence[T]], R] | None = None,
               name_rank: bool = True) -> R | None:
    """Run ``work`` on every rank; rank 0 gathers the results and returns ``combine(results)``
    (results in rank order); other ranks return None.

    A failure anywhere (in ``work`` on any rank, or in ``combine``) raises `RankFailed` on every
    rank with one line: ``rank k: <what went wrong>`` for the first failed rank (without the rank
    when every rank failed alike, or when ``name_rank`` is False: for steps only rank 0 does, such
    as opening the run folder). In one process this is
    ``combine([work()])`` and exceptions pass unchanged.
    """
    combine = combine or (lambda results: None)  # type: ignore[assignment,return-value]
    if not active():
        return combine([work()])
    rank, _ = world()
    try:
        local: tuple[str, Any] = ("ok", work())
    except Exception as exc:  # noqa: BLE001 - reported to every rank, then raised there
        local = ("failed", describe_failure(exc))
    gathered = gather_to_main(local)
    verdict: tuple[str, Any] = ("ok", None)
    result = None
    if rank == 0:
        assert gathered is not None
        failed = [(r, message) for r, (status, message) in enumerate(gathered) if status == "failed"]
        if failed:
            r, message = failed[0]
            everywhere = len(failed) == len(gathered) and len({m for _, m in failed}) == 1
            verdict = ("failed", f"rank {r}: {message}" if name_rank and not everywhere else message)
        else:
            try:
                result = combine([payload for _, payload in gathered])
            except Exception as exc:  # noqa: BLE001
                message = describe_failure(exc)
                verdict = ("failed", f"rank 0: {message}" if name_rank else message)
    verdict = broadcast_from_main(verdict)
    if verdict[0] == "failed":
        raise RankFailed(verdict[1])
    return result


def share(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (``value`` as it is in one process)."""
    return broadcast_from_main(value) if active() else value
