"""One process per device: everything rank-dependent, derived in one place (as nanoGPT does).

Launch: `torchrun --nproc_per_node=N $(which igm) train ...`, `igm train train.devices=N` (igm
starts the ranks itself with torch's elastic launcher), or `srun` on SLURM (torchrun inside srun,
or one task per device with MASTER_ADDR/MASTER_PORT set: SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID
then stand for RANK/WORLD_SIZE/LOCAL_RANK).

Semantics: ``train.batch_size`` is the GLOBAL batch. Every rank draws the same global batch of
data and noise from the same seeded streams and keeps its own rows (``rows``), and per-sample
randomness inside objectives (``uniform_rows``) does the same, so that for losses that are
means over samples, N ranks x B/N equal one process x B up to float round-off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from igm_cli.errors import IgmError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes the run folder, TensorBoard, metrics and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def rows(self, batch: int) -> slice:
        """This rank's rows of a global batch (``batch`` divisible by ``world_size``)."""
        per_rank = batch // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


def ranks_from_env(env=os.environ) -> Ranks:
    """RANK/WORLD_SIZE/LOCAL_RANK as torchrun sets them; SLURM's variables when only they are set
    and MASTER_ADDR says where rank 0 listens; else a single process."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return Ranks(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "MASTER_ADDR" in env and "SLURM_PROCID" in env:
        return Ranks(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]),
                     int(env.get("SLURM_LOCALID", 0)))
    return Ranks()


RANKS = ranks_from_env()  # this process; read once
_FLAGS = None  # a gloo group for stop/divergence flags: CPU tensors, no GPU sync


def init_process_group(device: torch.device) -> None:
    """Join the other ranks (nccl on GPUs, gloo on CPUs); a no-op for a single process."""
    global _FLAGS
    if not RANKS.distributed or torch.distributed.is_initialized():
        return
    os.environ.setdefault("RANK", str(RANKS.rank))
    os.environ.setdefault("WORLD_SIZE", str(RANKS.world_size))
    os.environ.setdefault("MASTER_PORT", "29500")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend, rank=RANKS.rank, world_size=RANKS.world_size,
                                         device_id=device if device.type == "cuda" else None)
    _FLAGS = torch.distributed.new_group(backend="gloo") if backend != "gloo" else None


def destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def check_batch(batch: int) -> None:
    if batch % RANKS.world_size:
        raise IgmError(f"train.batch_size={batch} is the global batch and must be divisible by "
                       f"the {RANKS.world_size} ranks")


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (stop signals, divergence)."""
    if not RANKS.distributed:
        return flag
    value = torch.tensor([int(flag)])
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX, group=_FLAGS)
    return bool(value.item())


def barrier() -> None:
    if RANKS.distributed:
        torch.distributed.barrier(group=_FLAGS)


def same_on_all_ranks(values: torch.Tensor) -> bool:
    """Whether the 1-D float64 CPU tensor ``values`` is identical on every rank."""
    if not RANKS.distributed:
        return True
    gathered = [torch.empty_like(values) for _ in range(RANKS.world_size)]
    torch.distributed.all_gather(gathered, values, group=_FLAGS)
    return all(torch.equal(g, values) for g in gathered)


def broadcast_text(text: str | None) -> str | None:
    """Rank 0's ``text`` on every rank (a run folder decided once)."""
    if not RANKS.distributed:
        return text
    box = [text]
    torch.distributed.broadcast_object_list(box, src=0, group=_FLAGS)
    return box[0]


def uniform_rows(batch_local: int, device, dtype=torch.float32) -> torch.Tensor:
    """U[0, 1) per sample, [batch_local]: drawn for the global batch from the default generator
    (seeded alike on every rank) and cut to this rank's rows, so a rank sees the numbers the
    single-process run gives its rows (e.g. WGAN-GP's interpolation weights)."""
    values = torch.rand(batch_local * RANKS.world_size, device=device, dtype=dtype)
    return values[RANKS.rows(batch_local * RANKS.world_size)]
