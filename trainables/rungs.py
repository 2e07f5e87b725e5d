"""Which targets a run evaluates, on which splits, in which order, and which share one fine-tune. No torch here:
the driver plans with it (search/price.py, search/trainable.py) as the pipeline runs with it.

`defer_test` (set by a search with `finalists`): a trial computes everything its validation average needs,
plus the test splits of the models it fine-tunes anyway (held in memory: evaluating them costs a forward pass,
fine-tuning them again for a finalist would cost the fine-tune). What needs work of its own only for test —
retrieval's test corpora (BUCC's mining, Tatoeba) and a fine-tune whose targets all lack a validation split
(TyDiQA unless it shares one) — is left to the search's finalists (search/finalists.py), which run the same
configuration without `defer_test`: the fine-tuned targets come back from the phase-3 cache (same key: the
splits a target evaluates do not change), the deferred work is computed.
"""

from __future__ import annotations

from typing import Iterable

from trainables.tasks import TARGETS, TASKS


def fine_tuned(name: str) -> bool:
    """Whether a target trains a head (everything but retrieval, which embeds with the encoder as it is)."""
    return TASKS[name].kind != "retrieval"


def finetune_group(cfg, name: str) -> tuple[str, ...]:
    """The targets that share `name`'s fine-tune, in the task table's order: those trained on the same English
    training set with the same selection set, kind and epochs — XQuAD and MLQA: one SQuAD v1.1 model evaluated on
    both, as XTREME trains one. The first names the fine-tune's seed and head, so a target's model is the same
    whether or not the others are in the run. Retrieval targets (no fine-tune): `(name,)`."""
    def recipe(t: str) -> tuple:
        task = TASKS[t]
        return (task.train_on or t, task.kind, task.selection or (t, "validation"),
                cfg.target.epochs.get(t, task.epochs))

    if not fine_tuned(name):
        return (name,)
    return tuple(t for t in TARGETS if fine_tuned(t) and recipe(t) == recipe(name))


def target_splits(cfg, name: str) -> list[str]:
    """The splits a run evaluates `name` on (empty: the run leaves the target out): `cfg.eval_splits` that the
    target has; with `cfg.defer_test`, test only where the run fine-tunes the target's model anyway (its
    fine-tune group has a target with a validation split among the run's targets)."""
    task = TASKS[name]
    splits = [s for s in cfg.eval_splits if s == "test" or task.has_validation]
    if getattr(cfg, "defer_test", False) and "test" in splits:
        trained_anyway = fine_tuned(name) and any(
            TASKS[t].has_validation and "validation" in cfg.eval_splits
            for t in finetune_group(cfg, name) if t in cfg.targets)
        if not trained_anyway:
            splits.remove("test")
    return splits


def deferred(cfg) -> list[str]:
    """Targets with test work a `defer_test` run leaves to the finalists (whole targets or their test split)."""
    if not getattr(cfg, "defer_test", False):
        return []
    full = cfg.model_copy(update={"defer_test": False})
    return [t for t in cfg.targets if target_splits(cfg, t) != target_splits(full, t)]


def rung_order(targets: Iterable[str]) -> list[str]:
    """Rung order: the targets that count in the validation average first — fine-tuned ones, then retrieval
    (BUCC) —, targets with only a test split (Tatoeba, XQuAD, TyDiQA) last. Retrieval is cheap but a poor
    first rung: it scores the phase-2 encoder untouched, and intermediate training that disturbs it may still
    win on every fine-tuned target (on a toy grid with lr up to 1e-3, TPE + ASHA with BUCC as the first rung
    found the best mixture in 1 of 50 seeds; with XNLI first in 47 of 50: benchmarks/search_efficiency.py)."""
    def rank(t: str) -> tuple[bool, bool]:
        trained = fine_tuned(t)
        return (not TASKS[t].has_validation, not trained if TASKS[t].has_validation else trained)

    return sorted(targets, key=rank)


def run_targets(cfg) -> list[str]:
    """The targets a run evaluates, in rung order (a `defer_test` run leaves out those with nothing left to do)."""
    return rung_order(t for t in cfg.targets if target_splits(cfg, t))
