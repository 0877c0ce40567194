"""Data-parallel training under torchrun: who this process is, and sums over all of them.

codecut uses torch's own engine: `torch.distributed` with DDP for the gradients (NCCL on CUDA,
gloo on the CPU). Every rank holds the same activations (each collects its share of the texts, then
they are gathered) and draws the same shuffle from the same seed, so step t's global batch is
the one a single process would take; each rank computes its slice of it. Statistics that need
the whole batch (the variance that normalizes FVU and AuxK, which codes fired) are summed over
the ranks, so the loss is the single-process loss and the result matches a one-process run up
to floating-point order.

    torchrun --nproc_per_node 2 -m codecut train --model M --hook H ... --out DIR
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.distributed as dist


class Ranks(NamedTuple):
    """This process's place: `rank` of `world` processes (0 of 1 outside torchrun)."""

    rank: int
    world: int

    @property
    def main(self) -> bool:
        """Rank 0: the one that shows progress and writes files."""
        return self.rank == 0

    def share(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch (the slices, in rank order, make the batch)."""
        return x.tensor_split(self.world)[self.rank] if self.world > 1 else x

    def part(self, items: list, total: int) -> tuple[list, int]:
        """This rank's contiguous share of `items` (texts to collect from), and its share of
        `total` (how many activations it collects), rounded up."""
        lo, hi = (len(items) * r // self.world for r in (self.rank, self.rank + 1))
        return items[lo:hi], -(-total // self.world)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over the ranks, in place (itself with one process)."""
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def gather(self, part: torch.Tensor) -> torch.Tensor:
        """Every rank's `part`, concatenated in rank order (parts may differ in length)."""
        if self.world == 1:
            return part
        parts: list = [None] * self.world
        dist.all_gather_object(parts, part.cpu())
        return torch.cat(parts).to(part.device)

    def from_main(self, make):
        """`make()` run on rank 0 only, its result sent to every rank (e.g. a sampled corpus,
        which must be the same everywhere)."""
        if self.world == 1:
            return make()
        box = [make() if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world > 1:
            dist.barrier()


SINGLE = Ranks(0, 1)  # a process on its own


def ranks() -> Ranks:
    """This process's ranks: from the initialized process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return SINGLE


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1 in the environment), for
    training on `device`: NCCL on CUDA (each rank on its own GPU, `LOCAL_RANK`), gloo on the
    CPU. Returns whether it joined."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def data_parallel(module: torch.nn.Module, unused_parameters: bool = False) -> torch.nn.Module:
    """`module` wrapped in DDP under torchrun (its gradients averaged over the ranks during
    backward), itself in a single process. `unused_parameters`: some parameters get no gradient
    (DDP must then look for them each step)."""
    if ranks().world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    # Buffers (code statistics) are the same on every rank: no need to sync them each step.
    return DistributedDataParallel(
        module, find_unused_parameters=unused_parameters, forward_sync_buffers=False
    )
