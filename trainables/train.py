"""The training loop: compact PyTorch, shared by phase 1 (toy MLM), phase 2 (multi-task) and phase 3.

AdamW (weight decay 0.01, not on biases/LayerNorm), linear warmup (10 %) and decay, gradient clipping
(1.0) and accumulation, bf16 autocast on CUDA, dynamic padding with length-grouped batches (sequences of
similar length share a batch, so little compute goes to padding), fixed seeds, no-grad batched evaluation.
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from trainables.features import IGNORE
from trainables.progress import bar as progress_bar

Batch = dict[str, torch.Tensor]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _nested(value) -> bool:
    """A feature field holding several sequences (multiple-choice inputs), not one."""
    return len(value) > 0 and isinstance(value[0], (list, tuple, np.ndarray))


def collate(features: Sequence[dict], pad_id: int) -> Batch:
    """Pad a list of features to the longest in the batch (multiple choice: [batch, choices, len]). Fields may
    be lists (fresh features) or arrays (memory-mapped from the features cache)."""
    choice = _nested(features[0]["input_ids"])
    seqs = [s for f in features for s in (f["input_ids"] if choice else [f["input_ids"]])]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
    mask = (ids != pad_id).long()
    if choice:
        ids, mask = ids.view(len(features), -1, width), mask.view(len(features), -1, width)
    batch = {"input_ids": ids, "attention_mask": mask}
    if "labels" in features[0]:
        labels = [f["labels"] for f in features]
        if isinstance(labels[0], (list, np.ndarray)):  # tagging: pad with IGNORE
            padded = torch.full((len(labels), width), IGNORE, dtype=torch.long)
            for i, l in enumerate(labels):
                padded[i, :len(l)] = torch.as_tensor(np.asarray(l, dtype=np.int64))
            batch["labels"] = padded
        else:
            batch["labels"] = torch.tensor(labels)
    for key in ("start_positions", "end_positions"):
        if key in features[0]:
            batch[key] = torch.tensor([f[key] for f in features])
    return batch


def _length(feature: dict) -> int:
    ids = feature["input_ids"]
    return sum(len(s) for s in ids) if _nested(ids) else len(ids)


def lengths_of(features: Sequence[dict]) -> np.ndarray:
    """Tokens per feature (a cached FeatureSet knows them without building each feature)."""
    if hasattr(features, "lengths"):
        return np.asarray(features.lengths())
    return np.array([_length(f) for f in features], dtype=np.int64)


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, sort by length within chunks of 50 batches, cut into batches, shuffle the batch order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = 50 * batch_size
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Endless length-grouped batches of indices, reshuffled every epoch (a DataLoader's batch sampler)."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed

    def __iter__(self):
        rng = random.Random(self.seed)
        while True:
            yield from length_grouped_batches(self.lengths, self.batch_size, rng)


def epoch_batches(features: Sequence[dict], batch_size: int, pad_id: int, seed: int, workers: int = 0) -> Iterator[Batch]:
    """Endless length-grouped, dynamically padded batches over `features`. With `workers` > 0 a DataLoader's
    worker processes collate the next batches while the model trains (the same batches, in the same order)."""
    sampler = LengthGroupedBatches(lengths_of(features), batch_size, seed)
    if workers <= 0:
        return (collate([features[i] for i in idx], pad_id) for idx in sampler)
    from functools import partial

    return iter(torch.utils.data.DataLoader(features, batch_sampler=sampler, num_workers=workers,
                                            collate_fn=partial(collate, pad_id=pad_id), persistent_workers=True,
                                            prefetch_factor=4))


def label_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Classification and multiple choice: one label per example."""
    return F.cross_entropy(logits, batch["labels"])


def token_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Tagging: one label per first sub-word (IGNORE elsewhere)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=IGNORE)


def span_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Span QA: mean of the start and end cross-entropies."""
    start, end = logits[..., 0], logits[..., 1]
    return (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2


def make_optimizer(model: torch.nn.Module, lr: float, steps: int, warmup: float = 0.1):
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (n.endswith("bias") or "LayerNorm" in n)]
    on_gpu = all(p.is_cuda for p in decay + no_decay)  # one fused kernel per step on GPUs (CPU: unchanged)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, eps=1e-8, **({"fused": True} if on_gpu and decay else {}))
    warm = max(1, int(warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    return opt, sched


class Hooks:
    """What a launcher does around training (nothing, in one process without checkpoints): restore the last
    checkpoint (returns the optimiser steps already taken and any extra state saved with it), say whether a
    checkpoint is due after an optimiser step, and save one (trainables.checkpoints, search/distributed.py)."""

    def restore(self, model, optimizer, scheduler) -> tuple[int, dict]:
        return 0, {}

    def due(self, step: int) -> bool:
        return False

    def save(self, model, optimizer, scheduler, step: int, extra: dict) -> None:
        pass


def fit(model: torch.nn.Module, draw: Callable[[], object], loss_of: Callable[[object], torch.Tensor], steps: int,
        lr: float, device: torch.device, grad_accum: int = 1, progress: bool = False, desc: str = "train",
        hooks: Hooks | None = None, on_step: Callable[[int], bool] | None = None, extra: dict | None = None) -> dict:
    """Run `steps` optimiser steps. `draw()` gives this worker's next micro-batch, `loss_of(batch)` its loss;
    `on_step(step)` runs after each optimiser step (e.g. model selection) and may update `extra`, the state
    saved with checkpoints; when it returns True, training stops there (early stopping). A resumed run fast-forwards the stream past the micro-batches it already
    trained on, so it sees exactly what an uninterrupted run would."""
    hooks = hooks or Hooks()
    model.train()
    opt, sched = make_optimizer(model, lr, steps)
    start, restored = hooks.restore(model, opt, sched)
    if extra is not None:
        extra.update(restored)
    for _ in range(start * grad_accum):
        draw()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    losses: deque = deque(maxlen=50)  # the last micro-batches' losses, kept on the device: reading one (.item())
    # would make the host wait for the GPU at every micro-step; they are read every 20 steps for the bar, and at the end
    bar = progress_bar(steps - start, desc, unit="step") if progress else None
    bar = None if bar is None or bar.disable else bar  # no bar in logs or under a search (and no loss read for it)
    done = steps
    for step in range(start, steps):
        model.train()
        for _ in range(grad_accum):
            batch = draw()
            with autocast:
                loss = loss_of(batch) / grad_accum
            loss.backward()
            losses.append(loss.detach() * grad_accum)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if on_step and on_step(step + 1):
            done = step + 1
            break
        if step + 1 < steps and hooks.due(step + 1):
            hooks.save(model, opt, sched, step + 1, extra if extra is not None else {})
        if bar is not None:
            bar.update(1)
            if (step + 1) % 20 == 0:
                bar.set_postfix(loss=f"{torch.stack(list(losses)).mean().item():.3f}")
    if bar is not None:
        bar.close()
    final = torch.stack(list(losses)).float().mean().item() if losses else float("nan")
    return {"steps": done, "resumed_at": start, "final_loss": final}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _my_share(n: int) -> tuple[list[int], int]:
    """This worker's items of n (rank r takes r, r + W, ...), padded to the same count on every worker so that
    sharded models run the same number of forward passes everywhere; returns (indices, real count)."""
    from trainables.distributed import worker

    w = worker()
    mine = list(range(w.rank, n, w.world))
    per = -(-n // w.world) if n else 0
    return mine + [mine[-1] if mine else 0] * (per - len(mine)), len(mine)


def _gathered(values: list, n: int) -> list:
    """Reassemble the workers' `_my_share` results into the order of the n items."""
    from trainables.distributed import gather, worker

    if worker().world == 1:
        return values
    out: list = [None] * n
    for rank, (part, real) in enumerate(gather((values, len(range(worker().rank, n, worker().world))))):
        for k, value in enumerate(part[:real]):
            out[rank + k * worker().world] = value
    return out


@torch.no_grad()
def predict(model, name: str, features: Sequence[dict], batch_size: int, pad_id: int, device: torch.device) -> list:
    """Logits per feature (as numpy arrays, padding removed), batched and length-grouped; with several workers
    each computes its share and all receive every result."""
    model.eval()
    share, _ = _my_share(len(features))
    order = sorted(range(len(share)), key=lambda k: _length(features[share[k]]))
    out: list = [None] * len(share)
    with progress_bar(len(order), f"predict {name}", unit="ex") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = collate([features[share[k]] for k in idx], pad_id)
            with torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null():
                logits = model(name, batch["input_ids"].to(device),
                               batch["attention_mask"].to(device)).float().cpu().numpy()
            for row, k in zip(logits, idx):
                f = features[share[k]]
                n = len(f["input_ids"])
                out[k] = row[:n] if row.ndim >= 2 and not _is_choice(f["input_ids"]) else row
            bar.update(len(idx))
    return _gathered(out, len(features))


def _is_choice(ids) -> bool:
    return len(ids) > 0 and not np.isscalar(ids[0])


@torch.no_grad()
def embed(model, features: Sequence[dict], batch_size: int, pad_id: int, device: torch.device,
          layer_fraction: float) -> np.ndarray:
    """Mean-pooled sentence embeddings; with several workers each embeds its share (retrieval at scale). As
    `predict`: bf16 autocast on GPUs, sentences sorted by length, and batches filled by tokens — each holds at
    most `batch_size` x the longest sentence's tokens, so short sentences go many more to a batch than long ones
    (BUCC's millions of sentences are mostly short) and no batch is larger than the plain one at its worst."""
    model.eval()
    share, _ = _my_share(len(features))
    order = sorted(range(len(share)), key=lambda k: _length(features[share[k]]))
    budget = batch_size * max((_length(features[i]) for i in share), default=1)
    out: list = [None] * len(share)
    with progress_bar(len(order), "embed", unit="sent") as bar:
        for idx in token_batches(order, [_length(features[share[k]]) for k in order], budget):
            batch = collate([features[share[k]] for k in idx], pad_id)
            with torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null():
                vectors = model.embed(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                      layer_fraction)
            for row, k in zip(vectors.float().cpu().numpy(), idx):
                out[k] = row
            bar.update(len(idx))
    rows = _gathered(out, len(features))
    return np.stack(rows) if rows else np.zeros((0, model.hidden), dtype=np.float32)


def token_batches(order: list[int], lengths: list[int], budget: int) -> Iterator[list[int]]:
    """Cut `order` (items sorted by length, ascending; `lengths` theirs, in that order) into consecutive batches
    whose padded size (rows x the batch's longest, its last) stays within `budget` tokens; one item at least."""
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end + 1 - start) * lengths[end] <= budget:
            end += 1
        yield order[start:end]
        start = end


def special_mask(ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """True where `ids` holds one of the tokenizer's special tokens — the rule of transformers'
    `get_special_tokens_mask(already_has_special_tokens=True)` (membership in `all_special_ids`), vectorised.
    Never an id range: XLM-R's `<mask>` is its last id (250001), with ordinary pieces between it and `<unk>`."""
    return torch.isin(ids, torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=ids.dtype))


def ordinary_ids(tokenizer) -> torch.Tensor:
    """Every vocabulary id that is not a special token (what a random replacement may draw)."""
    keep = torch.ones(len(tokenizer), dtype=torch.bool)
    keep[[i for i in set(tokenizer.all_special_ids) if i < len(tokenizer)]] = False
    return keep.nonzero().flatten()


def mask_tokens(ids: torch.Tensor, tokenizer, rng: torch.Generator, prob: float = 0.15,
                ordinary: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking as transformers' `DataCollatorForLanguageModeling`: 15 % of the non-special tokens are
    chosen; of those 80 % become <mask>, 10 % a random ordinary token, 10 % stay. Labels are IGNORE elsewhere.
    `ordinary` (from `ordinary_ids`) may be passed to save recomputing it per batch."""
    labels = ids.clone()
    chosen = (torch.rand(ids.shape, generator=rng) < prob) & ~special_mask(ids, tokenizer)
    labels[~chosen] = IGNORE
    ids = ids.clone()
    roll = torch.rand(ids.shape, generator=rng)
    ids[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    rand = chosen & (roll >= 0.8) & (roll < 0.9)
    ordinary = ordinary_ids(tokenizer) if ordinary is None else ordinary
    ids[rand] = ordinary[torch.randint(len(ordinary), ids.shape, generator=rng)][rand]
    return ids, labels


def mlm_batches(tokenizer, lines: Sequence[str], batch_size: int, seed: int, max_length: int = 128) -> Iterator[Batch]:
    from trainables.featcache import cached
    from trainables.features import featurize_sentences

    feats = cached(featurize_sentences, lines, tokenizer, max_length)
    rng = torch.Generator().manual_seed(seed)
    ordinary = ordinary_ids(tokenizer)
    for batch in epoch_batches(feats, batch_size, tokenizer.pad_token_id, seed):
        ids, labels = mask_tokens(batch["input_ids"], tokenizer, rng, ordinary=ordinary)
        yield {"input_ids": ids, "attention_mask": batch["attention_mask"], "labels": labels}
