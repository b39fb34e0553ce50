"""Data-parallel training under ``torchrun``: the process group, each rank's share of a batch, DDP, rank-0 writes.

``torchrun --nproc-per-node N -m kdc distill --distributed ...`` starts N processes. They see the same global batches
as one process with the same ``--batch-size``: every rank draws the same permutation, takes its share of each
global batch and weights its loss so that DDP's gradient average is the mean over the global batch. Outside a
process group every function here is the single-process identity.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kdc.errors import KdcError

#: Variables ``torchrun`` sets for every process it starts.
TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def world() -> tuple[int, int]:
    """``(rank, number of processes)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes files and logs (rank 0)."""
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def mean(value: float) -> float:
    """Mean of ``value`` over the ranks."""
    rank_count = world()[1]
    if rank_count == 1:
        return value
    total = torch.tensor(value, dtype=torch.float64)
    dist.all_reduce(total)
    return total.item() / rank_count


def share(batch: Sequence[int]) -> tuple[list[int], float]:
    """This rank's items of a global batch and the weight of its mean loss.

    Rank r takes items r, r+N, r+2N...; with weight ``N * mine / len(batch)`` the average over ranks of the weighted
    gradients is the gradient of the global batch mean. A rank left without items (a last batch shorter than N)
    recomputes the first item with weight 0, so that every rank takes part in the gradient average.
    """
    rank, rank_count = world()
    mine = list(batch[rank::rank_count])
    if not mine:
        return list(batch[:1]), 0.0
    return mine, rank_count * len(mine) / len(batch)


class _Step(nn.Module):
    """A stage's trainable modules with its loss as ``forward``: the unit DDP synchronises."""

    def __init__(self, step_loss: Callable[[dict], torch.Tensor], modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.trained = nn.ModuleList(modules)
        self.step_loss = step_loss

    def forward(self, batch: dict) -> torch.Tensor:
        return self.step_loss(batch)


def data_parallel(
    step_loss: Callable[[dict], torch.Tensor], modules: Sequence[nn.Module]
) -> Callable[[dict], torch.Tensor]:
    """``step_loss`` whose backward averages the gradients of ``modules`` over the ranks (DDP); unchanged alone."""
    if world()[1] == 1:
        return step_loss
    # A feature loss leaves the last convolution unused; static_graph handles that without a search every step.
    return DistributedDataParallel(_Step(step_loss, modules), static_graph=True)


@contextlib.contextmanager
def process_group(enabled: bool, device: str) -> Iterator[str]:
    """Join the group ``torchrun`` describes (gloo on CPU, NCCL on CUDA) for the block; yields this rank's device."""
    if not enabled:
        yield device
        return
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise KdcError(
            f"--distributed: {', '.join(missing)} not set; launch with "
            "torchrun --nproc-per-node N -m kdc distill --distributed ..."
        )
    backend = "gloo"
    if device.startswith("cuda"):
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        device, backend = f"cuda:{local_rank}", "nccl"
    dist.init_process_group(backend)
    try:
        yield device
    finally:
        dist.destroy_process_group()
