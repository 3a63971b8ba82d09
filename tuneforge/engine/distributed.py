"""One run on several processes: the process group, FSDP2 sharding, how a step's examples are split,
and the few collectives the training loop needs.

`Distributed.from_env` reads what a launcher set (`tuneforge train --nproc-per-node N`, see `launch.py`,
or torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Without them it is the one-process
object, whose methods are the identity or do nothing, so `fine_tune` has one shape for both.

Why a distributed step equals the one-process step: every rank reads and encodes the whole dataset
and walks the same seeded order, so each knows the whole step's batch and its completion-token count
(the global denominator, the same on every rank without a collective). Rank r takes examples
r, r + W, r + 2W, ... of it, divides its summed token loss by that global count, and FSDP sums (not
averages) the gradients across ranks: the sum of the ranks' gradients is the gradient of the whole
batch's loss. Every rank must run the same number of forward/backward passes (each one all-gathers
the layers), so a rank with fewer examples runs a zero-weighted copy of one to keep step.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# Backend per device type: NCCL between GPUs, gloo between CPU processes.
BACKENDS = {"cuda": "nccl", "cpu": "gloo"}


@contextlib.contextmanager
def _quiet_without_process_group():
    # DCP warns on every call without a process group, even when told (no_dist=True) that one process is meant.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


class _Nothing:
    """What ranks other than 0 get instead of a run-folder writer: every call does nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    mesh: Any = None  # the 1-D DeviceMesh FSDP shards over; None in one process

    @classmethod
    def from_env(cls, device: str) -> Distributed:
        """The process group a launcher asked for (WORLD_SIZE > 1), joined; else the one-process object.
        `device` is "cpu" or "cuda"; a GPU rank takes the GPU of its LOCAL_RANK."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls(device=device)
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if device == "cuda":
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
        if not dist.is_initialized():
            dist.init_process_group(BACKENDS[device.split(":")[0]])
        mesh = init_device_mesh(device.split(":")[0], (world,))
        return cls(rank, world, local_rank, device, mesh)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What model.json says about the layout (RunResult.extra)."""
        return {"worldSize": self.world, "sharding": "fsdp2" if self.world > 1 else "none"}

    def main_only(self, make: Callable[..., Any], *args, **kwargs) -> Any:
        """`make(...)` on rank 0, where the run folder is written; an object that ignores every call elsewhere."""
        return make(*args, **kwargs) if self.is_main else _Nothing()

    # -- sharding ------------------------------------------------------------------------------

    def shard(self, root: nn.Module, model: nn.Module) -> None:
        """FSDP2 over each decoder layer and the input embeddings (each gathered only while it runs);
        `root` (the CompletionLoss around `model`) holds the rest, final norm and LM head, gathered
        around each loss call (tied embeddings stay there too: one parameter cannot be in two groups).
        Parameters keep their own dtypes: the frozen base is sharded and all-gathered in bf16 (or fp32),
        the adapters in fp32, whose gradients are reduce-scattered in fp32 and summed, not averaged:
        each rank's loss is already divided by the whole batch's token count."""
        if self.world == 1:
            return
        from torch.distributed.fsdp import fully_shard

        embeddings = model.get_input_embeddings()
        tied = embeddings.weight is model.get_output_embeddings().weight
        root.sharded = True
        for module in [*model.model.layers, *([] if tied else [embeddings]), root]:
            fully_shard(module, mesh=self.mesh)
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM; a plain sum is what we want

    def fill(self, param: torch.Tensor, full: torch.Tensor) -> None:
        """Set `param` (sharded or not) to the full tensor `full`, which every rank holds."""
        with torch.no_grad():
            if self.world == 1:
                param.copy_(full)
                return
            from torch.distributed.tensor import distribute_tensor

            local = distribute_tensor(full.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
            param.to_local().copy_(local.to_local())

    def seed_ranks(self, seed: int) -> None:
        """Give each rank its own RNG stream (LoRA dropout masks): seeded alike, the ranks would draw the
        same masks for their different examples. One process keeps the stream it has."""
        if self.world > 1:
            torch.manual_seed(seed * 1_000_003 + self.rank)

    def full_tensors(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The whole tensors of (possibly sharded) `params`, on the CPU of every rank. Collective."""
        return {n: (p.full_tensor() if self.world > 1 else p).detach().to("cpu", torch.float32) for n, p in params.items()}

    # -- splitting the work --------------------------------------------------------------------

    def micro_batches(self, examples: list, size: int) -> list[tuple[list, bool]]:
        """This rank's share of a step's `examples` in chunks of at most `size`, as (chunk, counts).
        Every rank gets the same number of chunks; the padding ones (counts False) hold a copy of
        one example whose loss is multiplied by 0: the pass runs for the collectives, the gradient
        gets nothing from it."""
        mine = examples[self.rank :: self.world]
        rounds = math.ceil(math.ceil(len(examples) / self.world) / size)
        chunks = [(mine[i : i + size], True) for i in range(0, len(mine), size)]
        return chunks + [(examples[:1], False)] * (rounds - len(chunks))

    def this_ranks(self, group: list) -> Any | None:
        """This rank's item of `group` (one item per rank, run at the same time), None when there is none."""
        return group[self.rank] if self.rank < len(group) else None

    # -- collectives ---------------------------------------------------------------------------

    def all_sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks (float64)."""
        if self.world == 1:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on one (a stop request reaches the ranks at different moments)."""
        return self.all_sum(float(flag))[0] > 0

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def save(self, state: dict, path) -> None:
        """torch.distributed.checkpoint.save: each rank writes its own shards into `path`. Collective."""
        import torch.distributed.checkpoint as dcp

        with _quiet_without_process_group():
            dcp.save(state, checkpoint_id=path, no_dist=self.world == 1)

    def load(self, state: dict, path=None, reader=None) -> None:
        """torch.distributed.checkpoint.load into `state`'s tensors (in place, in this run's layout). Collective."""
        import torch.distributed.checkpoint as dcp

        with _quiet_without_process_group():
            dcp.load(state, checkpoint_id=path, storage_reader=reader, no_dist=self.world == 1)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
