"""Data-parallel and fully-sharded training of the PyTorch twins on PyTorch's own engines (DDP, FSDP).

Nothing here is a distributed engine: it names the unit to shard (one transformer block of each family) and
does the process-group setup `torchrun` expects, so a training script needs three lines:

    rank, world_size, device = init_distributed()            # reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK
    model = fully_shard_model(model)                          # FSDP2: one shard group per block, then the root
    # or: model = FullyShardedDataParallel(model, auto_wrap_policy=fsdp_auto_wrap_policy(model), ...)   # FSDP1
    # or: model = torch.nn.parallel.DistributedDataParallel(model)                                      # DDP

Each rank feeds its own slice of the global batch (`torch.utils.data.DistributedSampler`); gradients are
averaged over ranks, so one step equals a single-process step on the whole batch when every rank has the same
number of counted tokens (the causal-LM loss is a mean over each rank's tokens).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from ..conversion.tables import TABLES, block_class

__all__ = ["BLOCK_CLASSES", "block_classes", "fsdp_auto_wrap_policy", "fully_shard_model", "init_distributed"]

# The repeated unit of each family: sharding per block keeps one block's full parameters in memory at a time.
BLOCK_CLASSES: tuple[type[nn.Module], ...] = tuple(
    getattr(importlib.import_module(f".{family}", __package__), block_class(family)) for family in TABLES
)


def block_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The transformer-block classes `model` contains (one per family); ValueError if it has none."""
    found = {type(module) for module in model.modules() if isinstance(module, BLOCK_CLASSES)}
    if not found:
        raise ValueError(
            f"{type(model).__name__} contains no transformer block ({', '.join(c.__name__ for c in BLOCK_CLASSES)})"
        )
    return found


def fsdp_auto_wrap_policy(model: nn.Module) -> ModuleWrapPolicy:
    """The `auto_wrap_policy` of `torch.distributed.fsdp.FullyShardedDataParallel` (FSDP1) for any twin: each
    transformer block is its own FSDP unit; embeddings, the final LayerNorm and the heads stay in the root unit,
    which keeps GPT-2's tied `wte` / `lm_head` weight in one unit."""
    return ModuleWrapPolicy(block_classes(model))


def fully_shard_model(model: nn.Module, **fsdp_kwargs: Any) -> nn.Module:
    """Shard `model` with FSDP2 (`torch.distributed.fsdp.fully_shard`), one group per transformer block, then
    the root (embeddings, final LayerNorm, heads, and the tied LM head with them).

    Args:
        model: a twinformers PyTorch model, on the device it will train on.
        **fsdp_kwargs: passed to every `fully_shard` call (`mesh`, `mp_policy`, `reshard_after_forward`, ...).
    Returns:
        The same module, now an `FSDPModule`: its parameters are DTensor shards; `model.state_dict()` holds
        DTensors (`.full_tensor()` gathers one).
    """
    classes = tuple(block_classes(model))
    for module in model.modules():
        if isinstance(module, classes):
            fully_shard(module, **fsdp_kwargs)
    fully_shard(model, **fsdp_kwargs)
    return model


def init_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group `torchrun` (or any launcher setting RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
    MASTER_PORT) describes, and pick this process's device.

    Args:
        backend: "nccl" or "gloo"; default nccl when CUDA is available, else gloo (CPU).
    Returns:
        (rank, world_size, device): device is `cuda:LOCAL_RANK` with CUDA, else the CPU.
    Raises:
        ValueError: a launcher variable is missing.
    """
    missing = [name for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if name not in os.environ]
    if missing:
        raise ValueError(f"init_distributed: environment variables {missing} are not set; start with torchrun")
    cuda = torch.cuda.is_available()
    if cuda:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    return dist.get_rank(), dist.get_world_size(), device
