"""Process group facts for torchrun runs: rank, world size, whether this process writes files.

Outside torchrun (no ``WORLD_SIZE`` in the environment) a run is rank 0 of 1.
"""
from __future__ import annotations

import os


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
