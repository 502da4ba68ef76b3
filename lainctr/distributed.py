"""Data-parallel training on torch.distributed (``torchrun``), and the one-process case as its degenerate form.

``torchrun --nproc_per_node N run_expid.py --expid X`` (or ``--nnodes M ...``) starts N processes that find
each other through the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
:func:`init_from_environment` joins the process group (NCCL on CUDA, gloo on CPU). Everything else asks a
:class:`ProcessGroup`: which shard of a batch or a split a rank reads, how to gather evaluation arrays back
into the split's order, and whether this rank is the one that writes files.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the run: ``rank`` of ``world_size`` processes (1 = no distribution)."""
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes logs, checkpoints, histories and results rows."""
        return self.rank == 0

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This rank's part of ``rows`` (N,): contiguous parts of sizes differing by at most one, rank order."""
        return np.array_split(rows, self.world_size)[self.rank] if self.distributed else rows

    def broadcast(self, value):
        """Rank 0's ``value`` (any picklable object), on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather_in_batch_order(self, arrays: Dict[str, np.ndarray], batch_rows: Sequence[int]) -> Dict[str, np.ndarray]:
        """Every rank's arrays (same keys, 1-D) put back in the loader's order, on every rank.

        Each rank read shard ``rank`` of every global batch (:meth:`shard`), and ``batch_rows`` (B,) says how many
        of its rows each of its B batches gave; the result is batch 0's shards in rank order, then batch 1's, ...:
        the order one process reads the split in.
        """
        if not self.distributed:
            return arrays
        gathered = self.gather_objects((arrays, list(batch_rows)))
        if len({len(rows) for _, rows in gathered}) != 1:
            raise RuntimeError(f"ranks read different numbers of batches: {[len(rows) for _, rows in gathered]}")
        pieces = {key: [np.split(part[key], np.cumsum(rows)[:-1]) for part, rows in gathered] for key in arrays}
        return {key: np.concatenate([per_rank[batch] for batch in range(len(batch_rows))
                                     for per_rank in pieces[key]]) if len(batch_rows) else arrays[key]
                for key in arrays}

    def gather_objects(self, value) -> list:
        """[rank 0's value, rank 1's, ...] on every rank."""
        if not self.distributed:
            return [value]
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (e.g. that each of them wrote its part)."""
        if not self.distributed:
            return flag
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        value = torch.tensor([1 if flag else 0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())


SINGLE_PROCESS = ProcessGroup()


def init_from_environment(gpu: int) -> ProcessGroup:
    """Join torchrun's process group when WORLD_SIZE > 1 (gloo on CPU, NCCL on CUDA; with ``gpu >= 0`` each rank
    uses cuda:LOCAL_RANK); otherwise the single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE_PROCESS
    if not dist.is_initialized():
        use_cuda = gpu >= 0 and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return ProcessGroup(dist.get_rank(), dist.get_world_size())


def leave_process_group() -> None:
    """Leave torchrun's process group, if this process joined one, before the interpreter exits: a rank whose
    gloo threads were still alive at exit could abort ("terminate called without an active exception").

    Call it once the trainer is gone: a DDP wrapper holds the backend, which outlives ``destroy_process_group``
    while the wrapper lives. Wrappers left only in reference cycles are collected here first."""
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
