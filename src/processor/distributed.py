"""Multi-process training (``torchrun`` / ``accelerate launch``): who is rank 0, and a barrier.

The Trainer does the distributed work itself (it reads the launcher's ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK`` variables and creates the process group, gloo on CPU, nccl on GPUs). The project only
needs to know, *before* that group exists, which process may write files and talk to MLflow, so
rank and world size come from the launcher's environment, not from ``torch.distributed``.
"""

from __future__ import annotations

import os


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
