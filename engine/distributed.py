"""The processes of one sharded job (torchrun or srun) and the few messages they exchange.

    processes = init_processes("pytorch")      # "none": one process, nothing to set up
    device = processes.device("cuda:0")        # each process on its own GPU: cuda:LOCAL_RANK
    weights = processes.map(pixel_count, paths)
    everyone = processes.all_gather(my_report)
    processes.close()

The process group starts as mmengine starts it for training: on GPUs mmengine's
`init_dist` (NCCL; under srun it reads SLURM's variables and finds the master
node), on CPU processes gloo (train.py's engine.setup.set_launcher does the same).
Inference processes exchange only small Python objects (file names, failures,
timings), never tensors, so these go through a gloo group with a long timeout:
the exchange at the end waits for the slowest process's whole share, which may
take hours, and NCCL's object collectives would stage each message on a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

LAUNCHERS = ("none", "pytorch", "slurm")
# Long enough for a process to wait for the others' whole shares; a job that hangs is
# ended by its scheduler's time limit, as a training job would be.
CONTROL_TIMEOUT = timedelta(days=7)

T = TypeVar("T")
R = TypeVar("R")


class LauncherError(RuntimeError):
    """The launcher asked for cannot start here; the message says what to use."""


@dataclass
class Processes:
    """This process's place in the job; with one process every exchange is local."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: Any = None  # the gloo group messages go through (None: the default group)
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    def device(self, requested: str) -> str:
        """A CUDA request means "the GPUs": each process takes its node-local one."""
        if self.initialized and requested.startswith("cuda"):
            return f"cuda:{self.local_rank}"
        return requested

    def broadcast(self, value: T) -> T:
        """The main process's value, in every process."""
        if not self.initialized:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def all_gather(self, value: T) -> list[T]:
        """Every process's value, in rank order, in every process."""
        if not self.initialized:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=self.group)
        return gathered

    def map(self, function: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """[function(item) for item in items], each process computing every world_size-th."""
        mine = [function(item) for item in items[self.rank :: self.world_size]]
        results: list[Any] = [None] * len(items)
        for rank, part in enumerate(self.all_gather(mine)):
            results[rank :: self.world_size] = part
        return results

    def close(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialized = False


def init_processes(launcher: str) -> Processes:
    """Join the job started by `launcher` (none, pytorch = torchrun, slurm = srun)."""
    if launcher not in LAUNCHERS:
        raise LauncherError(f"--launcher {launcher}: use one of {', '.join(LAUNCHERS)}")
    if launcher == "none":
        return Processes()
    import torch.distributed as dist

    if torch.cuda.is_available():
        from mmengine.dist import init_dist

        init_dist(launcher, backend="nccl")
        group = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    elif launcher == "pytorch":
        if "RANK" not in os.environ:
            raise LauncherError(
                "--launcher pytorch: start the command with torchrun (torchrun --nproc_per_node "
                "N inference_with_coralscop.py ... --launcher pytorch)"
            )
        dist.init_process_group(backend="gloo", timeout=CONTROL_TIMEOUT)
        group = None
    else:
        raise LauncherError(
            f"--launcher {launcher} needs GPUs; on CPU use torchrun with --launcher pytorch"
        )
    return Processes(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        group=group,
        initialized=True,
    )
