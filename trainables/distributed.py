"""Training on several workers: DDP replicas or FSDP2 shards, sharded checkpoints, gathered results.

No launcher here (trainables never imports Ray): Ray Train starts the workers and initialises
`torch.distributed` (search/distributed.py); these functions only read that state. With one process every
function is a no-op, so phase 2 and phase 3 run the same code either way.

  wrap(model, cfg.distributed, device)   ddp: DistributedDataParallel; fsdp: FSDP2 `fully_shard` on each
                                         encoder layer, then the root (bf16 compute with fp32 master weights and
                                         reductions on GPUs); optional activation checkpointing (HF's, non-
                                         reentrant). Create the optimizer afterwards.
  rows(n)                                this worker's rows of a global batch: the global batch stays the same
                                         for any number of workers, so N workers train what one process would
  full_state(model)                      the unsharded state dict, on rank 0 (a collective: every rank calls it)
  save_sharded / load_sharded            model + optimizer + scheduler with torch.distributed.checkpoint (DCP)
  gather(obj)                            every rank's object, in rank order
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Worker:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def worker() -> Worker:
    if dist.is_available() and dist.is_initialized():
        return Worker(dist.get_rank(), dist.get_world_size())
    return Worker()


def device_for(name: str = "auto") -> torch.device:
    """This worker's device: its local GPU under a launcher that set LOCAL_RANK, else `name` (auto: cuda if any)."""
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if worker().world > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cuda")


def rows(n: int) -> slice:
    """This worker's contiguous rows of a global batch of n (ranks 0..r-1 take one row more when n % world)."""
    w = worker()
    size, extra = divmod(n, w.world)
    start = w.rank * size + min(w.rank, extra)
    return slice(start, start + size + (w.rank < extra))


def wrap(model: torch.nn.Module, dcfg, device: torch.device) -> torch.nn.Module:
    """Move `model` to `device` and make it a DDP replica or FSDP2 shards (no-op for one worker)."""
    encoder = getattr(model, "encoder", model)
    if dcfg.activation_checkpointing and hasattr(encoder, "gradient_checkpointing_enable"):
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(device)
    if worker().world == 1 or dcfg.strategy == "none":
        return model
    if dcfg.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return _DDP(DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None))
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (worker().world,))
    bf16 = dcfg.mixed_precision == "bf16" and device.type == "cuda"  # CPUs compute in fp32
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for layer in _layers(encoder):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def _layers(encoder) -> list:
    inner = getattr(encoder, "encoder", None)
    return list(getattr(inner, "layer", [])) if inner is not None else []


class _DDP(torch.nn.Module):
    """A DDP replica that keeps the wrapped model's interface (`embed`, `heads`, named calls)."""

    def __init__(self, ddp):
        super().__init__()
        self.ddp = ddp

    def forward(self, *args, **kwargs):
        return self.ddp(*args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.ddp.module, name)

    def state_dict(self, *args, **kwargs):
        return self.ddp.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state, *args, **kwargs):
        return self.ddp.module.load_state_dict(state, *args, **kwargs)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.ddp.module if isinstance(model, _DDP) else model


def full_state(model: torch.nn.Module) -> dict:
    """The unsharded state dict (CPU tensors) on rank 0, {} elsewhere. Every rank must call it."""
    if worker().world == 1 or isinstance(model, _DDP):
        return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()} if worker().main else {}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return dict(get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)))


def save_sharded(model, optimizer, scheduler, step: int, folder: Path, extra: dict | None = None) -> None:
    """Model, optimizer and scheduler state with DCP (each rank writes its shard) plus `extra`: its dicts of
    tensors (phase 3's best epoch so far) go into the shards, its numbers into rank 0's `meta.json`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    extra = extra or {}
    msd, osd = get_state_dict(unwrap(model), optimizer)
    tensors = {k: v for k, v in extra.items() if isinstance(v, dict)}
    dcp.save({"model": msd, "optim": osd, **{f"extra.{k}": v for k, v in tensors.items()}}, checkpoint_id=str(folder))
    if worker().main:
        numbers = {k: v for k, v in extra.items() if not isinstance(v, dict)}
        (Path(folder) / "meta.json").write_text(json.dumps({"step": step, "scheduler": scheduler.state_dict(),
                                                            "numbers": numbers, "tensors": sorted(tensors)}))


def load_sharded(model, optimizer, scheduler, folder: Path) -> tuple[int, dict]:
    """Restore what `save_sharded` wrote: (optimiser steps already taken, extra)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    meta = json.loads((Path(folder) / "meta.json").read_text())
    target = unwrap(model)
    msd, osd = get_state_dict(target, optimizer)
    state = {"model": msd, "optim": osd}
    for key in meta["tensors"]:  # templates of the model's own shapes and shards
        state[f"extra.{key}"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(target, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    scheduler.load_state_dict(meta["scheduler"])
    extra = dict(meta["numbers"])
    extra.update({key: state[f"extra.{key}"] for key in meta["tensors"]})
    return int(meta["step"]), extra


def gather(obj) -> list:
    """Every rank's `obj`, in rank order (one process: [obj])."""
    if worker().world == 1:
        return [obj]
    out: list = [None] * worker().world
    dist.all_gather_object(out, obj)
    return out


def all_mean(value: float) -> float:
    """The mean of a float over the workers (e.g. the loss of the global batch)."""
    if worker().world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / worker().world
