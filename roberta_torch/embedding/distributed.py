"""Scale-out with torch.distributed: under `torchrun --nproc-per-node N` (or several nodes)
every rank embeds every N-th text, and rank 0 gets all embeddings back in input order.

Strided shards (rank r takes texts r, r + N, ...) give every rank the same mix of lengths.
Without an initialized process group (or with one process) everything runs locally.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os

import numpy as np
import torch

logger = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# Whether init_from_environment created the default process group (and so must destroy it).
_created_group = False


def init_from_environment() -> tuple[int, int, torch.device | None]:
    """Join the process group torchrun describes (WORLD_SIZE > 1): NCCL with one GPU per local
    rank when CUDA is available, gloo on CPUs. Returns (rank, world_size, the device to use or
    None for the default)."""
    global _created_group
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return 0, 1, None
    device = None
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device is not None else "gloo")
        _created_group = True
    rank, world_size = world()
    logger.info("rank %d of %d on %s", rank, world_size, device or "cpu")
    return rank, world_size, device


def gather_to_rank0(local: np.ndarray, total: int) -> np.ndarray | None:
    """Every rank's (len(shard), dim) rows -> (total, dim) in input order on rank 0 (None elsewhere)."""
    import torch.distributed as dist

    rank, world_size = world()
    if world_size == 1:
        return local
    gathered = [None] * world_size if rank == 0 else None
    dist.gather_object(local, gathered, dst=0)
    if rank != 0:
        return None
    out = np.empty((total, *local.shape[1:]), dtype=local.dtype)
    for r, rows in enumerate(gathered):
        out[r::world_size] = rows
    return out


def encode_sharded(embedder, texts: list[str], **encode_kwargs) -> np.ndarray | None:
    """`embedder.encode(texts, convert_to="numpy", ...)` split over the ranks: float32 rows in
    input order on rank 0, None elsewhere. (Quantize on rank 0 afterwards: int8 ranges must
    span every rank's rows.)"""
    if encode_kwargs.get("precision", "float32") != "float32":
        raise ValueError("encode_sharded returns float32 rows; quantize them on rank 0 (int8 ranges span all ranks).")
    rank, world_size = world()
    local = embedder.encode(texts[rank::world_size], convert_to="numpy", **encode_kwargs)
    local = local.reshape(-1, embedder.embedding_dim)
    return gather_to_rank0(local, len(texts))


@contextlib.contextmanager
def process_group_scope():
    """Run a distributed job, then leave the process group init_from_environment created:
    after success every rank first waits for the others (rank 0 may still be writing).

    The group is destroyed and collected here, while the interpreter is fully alive: left to
    interpreter shutdown, a gloo worker thread that still releases Python objects tries to
    take the GIL during finalization and the process aborts ("terminate called without an
    active exception", seen on about half the runs of a gather on torch 2.13)."""
    global _created_group
    import torch.distributed as dist

    succeeded = False
    try:
        yield
        succeeded = True
    finally:
        if _created_group and dist.is_initialized():
            if succeeded:
                barrier()
            dist.destroy_process_group()
            gc.collect()
            _created_group = False


def barrier() -> None:
    import torch.distributed as dist

    if world()[1] > 1:
        dist.barrier()


def broadcast_from_rank0(value):
    """Rank 0's picklable `value` on every rank."""
    import torch.distributed as dist

    if world()[1] == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
