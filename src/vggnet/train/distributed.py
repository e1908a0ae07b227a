"""This process's place in a torchrun job, and the shard of each epoch it trains on."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from ..devices import pick_device


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (a list of one without torchrun)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()


def setup_distributed(device: str = "auto") -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on GPU, gloo on CPU); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        # torchrun keeps one TCPStore across restarts, and the lost attempt's keys (its workers' addresses)
        # are still in it: a restarted worker could read them and dial a dead process (pytorch#135712).
        # Each attempt gets its own key space.
        store, _, _ = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, store=dist.PrefixStore(f"vggnet/attempt{attempt}", store), rank=rank, world_size=world
        )
    return Dist(rank, world, local, dev)


def teardown_distributed(env: Dist) -> None:
    """Leave the process group a multi-process run joined."""
    if env.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def epoch_indices(n: int, epoch: int, seed: int, env: Dist, per_step: int) -> list[int]:
    """This rank's training indices of one epoch, in order, whole steps only (DistributedSampler's shuffle)."""
    sampler = torch.utils.data.DistributedSampler(
        range(n), num_replicas=env.world, rank=env.rank, shuffle=True, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)
    return indices[: len(indices) // per_step * per_step]
