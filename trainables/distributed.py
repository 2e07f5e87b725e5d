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
  local_rows(batch) / shared_loss(...)   those rows on the device, and the loss weighted so that uneven rows or
                                         labelled-token counts still sum to one process's gradient
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


SHARE = "_share"  # batch key: what this worker's mean loss counts for (see `local_rows`)


def local_rows(batch: dict, device: torch.device) -> dict:
    """This worker's rows of a global batch, on `device`. With several workers the batch also carries
    `SHARE`: the factor that makes this worker's mean loss (over its rows, or over its labelled tokens for
    token-level labels: MLM, tagging) count what it would in one process's mean over the whole batch, once
    DDP/FSDP average the workers' gradients — so N workers train exactly what one process trains even when
    the rows split unevenly or hold different numbers of labelled tokens, or a batch has fewer rows than there
    are workers (such a worker computes a stand-in row that counts zero). Use `shared_loss` on the loss."""
    from trainables.features import IGNORE

    n, w = len(batch["input_ids"]), worker()
    part = rows(n)
    if w.world == 1:
        return {k: v[part].to(device) for k, v in batch.items()}
    labels = batch.get("labels")
    if part.stop == part.start:  # fewer rows than workers (an epoch's last batch): a stand-in row that counts
        part, mine, total = slice(0, 1), 0, 1  # zero, so this worker still takes part in the reduction
    elif labels is not None and labels.dim() == 2:  # token labels: my labelled tokens of the batch's
        mine, total = (labels[part] != IGNORE).sum().item(), (labels != IGNORE).sum().item()
    else:
        mine, total = part.stop - part.start, n
    out = {k: v[part].to(device) for k, v in batch.items()}
    out[SHARE] = mine * w.world / max(total, 1)
    return out


def shared_loss(loss_fn, logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """`loss_fn(logits, batch)` weighted by the batch's `SHARE` (one process: unchanged). A worker with nothing
    to learn from in this batch (no labelled token in its rows) contributes zero, not NaN, and still takes part
    in the gradient reduction."""
    share = batch.get(SHARE)
    if share is None:
        return loss_fn(logits, batch)
    if share == 0:
        return logits.sum() * 0.0
    return loss_fn(logits, batch) * share


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

        # Several heads (a phase-2 mixture, MLM mixed in) with one head per micro-batch: the others take no part
        # in that backward pass, which DDP must be told of (else the next step fails: "Expected to have finished
        # reduction in the prior iteration"). Heads unused on every worker keep grad None, as in one process.
        several = len(getattr(model, "heads", ())) > 1
        return _DDP(DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                            find_unused_parameters=several))
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


def extra_version(tensors: dict, numbers: dict) -> tuple:
    """What tells whether a dict of tensors in a checkpoint's `extra` (phase 3's best model so far) changed since
    it was last written, so that it is written once per change, not with every checkpoint: its identity and the
    step it was taken at (`best_step`; an id alone can be reused once the old dict is freed). Without a
    `best_step`, all the numbers stand in for it."""
    step = numbers.get("best_step", json.dumps(numbers, sort_keys=True, default=str))
    return id(tensors), step


def save_sharded(model, optimizer, scheduler, step: int, folder: Path, extra: dict | None = None,
                 side: Path | None = None, written: dict | None = None) -> None:
    """Model, optimizer and scheduler state with DCP (each rank writes its shard) plus `extra`: its numbers go into
    rank 0's `meta.json`, its dicts of tensors (phase 3's best epoch so far) into the shards — or, with `side`, into
    their own DCP folder under `side`, written only when they changed since the last save (`written` remembers
    what is there), so the best-epoch copy is not inside every checkpoint."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    extra = extra or {}
    msd, osd = get_state_dict(unwrap(model), optimizer)
    numbers = {k: v for k, v in extra.items() if not isinstance(v, dict)}
    tensors = {k: v for k, v in extra.items() if isinstance(v, dict)}
    inline, placed = dict(tensors), {}
    if side is not None and written is not None:
        for key, value in tensors.items():
            version = extra_version(value, numbers)
            if written.get(key, (None,))[0] != version:
                place = Path(side) / f"{key}-{step:09d}"
                dcp.save({f"extra.{key}": value}, checkpoint_id=str(place))
                written[key] = (version, str(place))
            placed[key] = written[key][1]
            inline.pop(key)
    dcp.save({"model": msd, "optim": osd, **{f"extra.{k}": v for k, v in inline.items()}}, checkpoint_id=str(folder))
    if worker().main:
        meta = Path(folder) / "meta.json"
        meta.with_name("meta.json.tmp").write_text(json.dumps({"step": step, "scheduler": scheduler.state_dict(),
                                                               "numbers": numbers, "tensors": sorted(tensors),
                                                               "side": placed}))
        os.replace(meta.with_name("meta.json.tmp"), meta)
    if worker().world > 1:  # no worker returns before the checkpoint is whole (rank 0's meta.json written)
        dist.barrier()


def drop_superseded(side: Path, written: dict) -> None:
    """Remove side copies that no checkpoint refers to any more (rank 0, after the checkpoint is stored)."""
    import shutil

    keep = {Path(p).name for _, p in written.values()}
    if worker().main and Path(side).exists():
        for old in Path(side).iterdir():
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)


def load_sharded(model, optimizer, scheduler, folder: Path, written: dict | None = None) -> tuple[int, dict]:
    """Restore what `save_sharded` wrote: (optimiser steps already taken, extra)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    meta = json.loads((Path(folder) / "meta.json").read_text())
    target = unwrap(model)
    msd, osd = get_state_dict(target, optimizer)
    state = {"model": msd, "optim": osd}
    side = meta.get("side", {})
    templates = {key: {k: v.detach().clone() for k, v in model.state_dict().items()} for key in meta["tensors"]}
    state.update({f"extra.{key}": templates[key] for key in meta["tensors"] if key not in side})
    dcp.load(state, checkpoint_id=str(folder))
    for key, place in side.items():
        part = {f"extra.{key}": templates[key]}
        dcp.load(part, checkpoint_id=place)
        state[f"extra.{key}"] = part[f"extra.{key}"]
    set_state_dict(target, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    scheduler.load_state_dict(meta["scheduler"])
    extra = dict(meta["numbers"])
    extra.update({key: state[f"extra.{key}"] for key in meta["tensors"]})
    if written is not None:
        written.update({key: (extra_version(extra[key], meta["numbers"]), place) for key, place in side.items()})
    return int(meta["step"]), extra


def rank0_says(flag: bool) -> bool:
    """Rank 0's `flag` on every worker (one process: `flag`): for decisions every worker must take together,
    such as a checkpoint due by rank 0's clock."""
    if worker().world == 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())


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
