"""Multi-process training (``torchrun`` / ``accelerate launch``): who is rank 0, and a barrier.

The Trainer does the distributed work itself (it reads the launcher's ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK`` variables and creates the process group, gloo on CPU, nccl on GPUs). The project only
needs to know, *before* that group exists, which process may write files and talk to MLflow, so
rank and world size come from the launcher's environment, not from ``torch.distributed``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def rank() -> int:
    """Global rank given by the launcher (0 when started as a plain single process)."""
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """The one process that writes outputs, logs to MLflow and prints the summary."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process or before the Trainer created the group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def end() -> None:
    """Tear the process group down once no collective is left (silences the "destroy_process_group()
    was not called" warning and frees NCCL resources)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# What torchrun / accelerate launch export and what accelerate reads to decide it is distributed.
_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                  "ROLE_WORLD_SIZE", "GROUP_WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


@contextmanager
def single_process() -> Iterator[None]:
    """Run a block as if not launched by torchrun: the one-off qwen-tiny build trains with its own
    Trainer, which would otherwise join the job's process group while the other rank waits on the
    build's file lock (a deadlock). Each rank then builds or waits alone; the training Trainer, made
    after the block, resets accelerate's state and sees the variables again."""
    saved = {name: os.environ.pop(name) for name in _LAUNCHER_VARS if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
