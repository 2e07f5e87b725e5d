"""The three-phase pipeline: what one trial of every search does. No Ray here.

  phase 1  the pretrained encoder (Hub id, local folder, or the toy model built from the toy corpus)
  phase 2  multi-task intermediate training on a Mixture -> encoder folder (content-addressed cache)
  phase 3  per target: a fresh head fine-tuned on English, zero-shot evaluation in every language;
           BUCC and Tatoeba embed with the phase-2 encoder directly
All data is loaded before any training, so a missing source fails in seconds, not hours.

`Pipeline(cfg).prepare()` runs phases 1-2; `.targets()` then yields one `TargetResult` per target, in rung
order (validation targets first, fine-tuned before retrieval), each read from or written to the phase-3 cache; `.results()` is the results
JSON. Callers decide what to do per target: `run_pipeline` logs it, the search's adapter turns it into a
rung. A restarted run recomputes nothing: phases 2 and 3 come back from the cache.

Run:  python -m trainables run configs/pipeline/toy.yaml --json out.json
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from trainables import data as D
from trainables import names
from trainables.cache import Cache, Entry
from trainables.config import PipelineConfig, loader_workers
from trainables.errors import XstiltsError
from trainables.kinds import KINDS, featurize, labels_of
from trainables.metrics import primary, task_score, xtreme_score
from trainables.mixture import Mixture
from trainables.model import MultiTaskModel, load_encoder, load_tokenizer, toy_model
from trainables.distributed import device_for, rows, wrap
from trainables import featcache
from trainables.featcache import derived, take
from trainables.phase2 import encoder_id, require, train_intermediate
from trainables.tasks import INTERMEDIATE, TASKS, Task
from trainables.tracking import NullTracker, Tracker, log_summary
from trainables.train import Hooks, epoch_batches, fit, pick_device, set_seed

PHASE3_VERSION = "2"  # bump when phase-3 training or evaluation changes what it produces
Mapper = Callable[[Callable, list[tuple]], Iterable]  # (fn, argument tuples) -> results in the same order


@dataclass(frozen=True)
class TargetResult:
    """One target's scores (split -> language -> metric -> value) and notes (e.g. BUCC's threshold_from)."""

    name: str
    splits: dict[str, dict[str, dict[str, float]]]
    notes: dict
    cached: bool
    seconds: float


HOLDOUT_EVERY = 10  # "holdout" selection: every 10th English training example is held out (at most 500 used)
SELECTION_SIZE = 500  # jiant validates on a 500-example subset of the English dev set


def load_all(cfg: PipelineConfig, data_dir: Path | None) -> dict:
    """Every example the run needs, loaded (and checked) up front."""
    examples, dropped = D.load_mixture(cfg.intermediate.mixture, data_dir)
    return {"intermediate": examples, "deduplicated": dropped,
            "targets": {name: load_target(name, data_dir) for name in cfg.targets}}


def load_target(name: str, data_dir: Path | None) -> dict:
    """One target's examples: evaluation splits by language; fine-tuned targets also their English training
    and model-selection examples and label names."""
    task = TASKS[name]
    entry = {split: D.load_split(task, split, data_dir) for split in ("validation", "test")}
    if KINDS[task.kind].head is not None:
        entry["train"] = D.load_split(task, "train", data_dir).get("en", [])
        if not entry["train"]:
            raise XstiltsError(f"target {name} has no English training data in {data_dir} "
                               f"(it trains on {task.train_on}) — prepare it or drop it from targets")
        entry["labels"] = labels_of(task, entry["train"])
        entry["train"], entry["selection"] = selection_split(task, entry["train"], data_dir)
    return entry


def selection_split(task: Task, train: list[dict], data_dir: Path | None) -> tuple[list[dict], list[dict]]:
    """(training examples, model-selection examples) of a fine-tuned target, per the task table's `selection`:
    the English dev set of the task named there, or a held-out slice of the English training set. Never a
    split reported as test."""
    source, kind = task.selection or (task.name, "validation")
    if kind == "holdout":
        key = getattr(train, "key", None)
        held = [ex for n, ex in enumerate(train) if n % HOLDOUT_EVERY == HOLDOUT_EVERY - 1]
        kept = [ex for n, ex in enumerate(train) if n % HOLDOUT_EVERY != HOLDOUT_EVERY - 1]
        return (derived(kept, key, {"holdout": "kept"}),
                take(derived(held, key, {"holdout": "held"}), SELECTION_SIZE))
    return train, take(D.load_split(source, "validation", data_dir, languages=["en"]).get("en", []), SELECTION_SIZE)


def selection_inputs(task: Task, data_dir: Path | None) -> list:
    source, kind = task.selection or (task.name, "validation")
    return D.inputs(source, "train" if kind == "holdout" else "validation", data_dir)


def ensure_toy_data(cfg: PipelineConfig, log=print) -> None:
    """The toy world needs no download: with the toy model, the presets' `toy_data` folder is generated on first
    use. Any other missing data_dir is refused by `trainables.preflight` (a typo never becomes a benchmark)."""
    from trainables.preflight import toy_data_pending

    if toy_data_pending(cfg):
        from trainables.toy import write_toy

        log(f"writing the toy benchmark to {cfg.data_dir} (seed 0)")
        write_toy(Path(cfg.data_dir), seed=0)


def base_model(cfg: PipelineConfig, data_dir: Path | None, log=print) -> Path | str:
    """Phase 1: the pretrained encoder's location."""
    if cfg.model.name == "toy":
        if data_dir is None:
            raise XstiltsError("model.name=toy needs data_dir (the toy benchmark: `xstilts data toy --out DIR`)")
        return toy_model(data_dir, Path(cfg.cache_dir), cfg.model, seed=0, log=log)
    return cfg.model.name


# ---------------------------------------------------------------- phase 3: one target


def finetune_target(cfg, task: Task, encoder_dir, tok, entry: dict, device, seed: int, hooks: Hooks | None = None):
    """Phase 3 training: a fresh head on the English training set, one linear schedule over all epochs (jiant);
    at each epoch's end the model is scored on the task's English selection examples (`selection_split`) and
    the best epoch is kept. Runs on one process or as one of several workers (DDP/FSDP2)."""
    t = cfg.target
    kind = KINDS[task.kind]
    set_seed(seed + sum(map(ord, task.name)))  # each target's run is reproducible on its own (and cacheable)
    model = MultiTaskModel(load_encoder(encoder_dir))
    model.add_head(task.name, task.kind, len(entry["labels"] or ()))
    model = wrap(model, cfg.distributed, device)
    examples = take(entry["train"], t.max_train_examples)
    feats = featurize(task.kind, examples, tok, t.qa_max_length if kind.qa else t.max_length,
                      labels=entry["labels"] or (), doc_stride=t.doc_stride)
    batch_size = t.qa_batch_size if kind.qa else t.batch_size
    epochs = t.epochs.get(task.name, task.epochs)
    per_epoch = max(1, math.ceil(len(feats) / (batch_size * t.grad_accum)))
    total = max(1, round(per_epoch * epochs))
    epoch_ends = {min(total, per_epoch * (e + 1)) for e in range(math.ceil(epochs))}
    batches = epoch_batches(feats, batch_size, tok.pad_token_id, seed, loader_workers(cfg, device))

    def draw():
        batch = next(batches)
        return {k: v[rows(len(v))].to(device) for k, v in batch.items()}  # this worker's rows

    dev = entry["selection"]  # zero-shot model selection: English examples, never a split reported as test
    best: dict = {"score": -1.0}

    def on_step(step: int) -> None:
        if step in epoch_ends and dev:
            score = primary(evaluate_one(model, task, dev, tok, cfg, device, entry["labels"], "en"))
            if score > best["score"]:
                best.update(score=score, state={k: v.detach().clone() for k, v in model.state_dict().items()})

    fit(model, draw, lambda b: kind.loss(model(task.name, b["input_ids"], b["attention_mask"]), b), total, t.lr,
        device, t.grad_accum, progress=cfg.progress, desc=task.name, hooks=hooks, on_step=on_step, extra=best)
    if best.get("state") is not None:
        model.load_state_dict(best["state"])
    return model


def evaluate_one(model, task: Task, examples, tok, cfg, device, labels, lang, **kw) -> dict:
    return KINDS[task.kind].evaluate(model, task, examples, tok, cfg.target, device, labels=labels or (), lang=lang,
                                     **kw)


def evaluate_target(cfg, task: Task, model, tok, entry: dict, device) -> dict:
    """{"splits": split -> lang -> metric -> value, "notes": {...}} for the splits the target has (XQuAD, TyDiQA
    and Tatoeba: test only). Bitext mining (BUCC) tunes its threshold on validation and applies it to test;
    `notes["threshold_from"]` says per language where each test threshold came from."""
    mining = task.kind == "retrieval" and task.metric == "f1"
    splits: dict[str, dict] = {"validation": {}, "test": {}}
    thresholds, origins, notes = {}, {}, {}
    cap = cfg.target.max_eval_examples
    for split in ("validation", "test"):
        if split not in cfg.eval_splits and not (split == "validation" and mining):
            continue
        for lang, examples in entry[split].items():
            kw = {}
            if task.kind == "retrieval":
                kw = {"layer_fraction": cfg.model.retrieval_layer}
                examples = {**examples[0], "key": getattr(examples, "key", None)}
                if split == "test" and mining:
                    kw["threshold"] = thresholds.get(lang)  # None (no dev): tuned on test itself, noted
            else:
                examples = take(examples, cap)
            values = evaluate_one(model, task, examples, tok, cfg, device, entry.get("labels"), lang, **kw)
            if mining:
                threshold, origin = values.pop("threshold"), values.pop("threshold_from")
                if split == "validation":
                    thresholds[lang], origins[lang] = threshold, origin
                else:
                    notes.setdefault("threshold_from", {})[lang] = origins.get(lang, "test itself (no dev data)")
            splits[split][lang] = values
    return {"splits": {s: v for s, v in splits.items() if s in cfg.eval_splits and v}, "notes": notes}


def phase3_entry(cfg, name: str, encoder_dir, data_dir: Path | None, device) -> Entry:
    """The cache entry of one target's results. Its key: the encoder (a cache entry's own key), the target
    settings, the seed, the evaluation splits, the retrieval layer, the data the target reads (its training
    task's English training set and its evaluation splits), the precision (device type) and the version."""
    task = TASKS[name]
    payload = {"target": name, "encoder": encoder_id(encoder_dir), "revision": cfg.model.revision,
               "settings": cfg.target.model_dump(), "seed": cfg.seed, "splits": cfg.eval_splits,
               "layer": cfg.model.retrieval_layer, "precision": device.type, "version": PHASE3_VERSION,
               "distributed": cfg.distributed.model_dump(include={"workers", "strategy", "mixed_precision"}),
               "data": {s: D.inputs(task, s, data_dir) for s in ("train", "validation", "test")
                        if s != "train" or KINDS[task.kind].head is not None},
               "selection": selection_inputs(task, data_dir) if KINDS[task.kind].head is not None else None}
    return Cache(cfg.cache_dir).entry("phase3", payload)


def phase3_job(cfg, name: str, encoder_dir, tok, entry: dict, cache_entry: Entry, launcher=None) -> tuple[dict, bool]:
    """Phase 3 for one target through its cache entry; self-contained, so it can run in another process (the
    search fans targets out over a placement group) or, with `distributed.workers > 1`, as a job of
    `launcher` (Ray Train workers). Returns ({"splits", "notes"}, cache hit)."""
    def build(_tmp):
        if cfg.distributed.workers > 1:
            return require(launcher)({"kind": "phase3", "cfg": cfg.model_dump(), "target": name,
                                      "encoder": str(encoder_dir), "key": f"phase3-{cache_entry.key}"})
        return compute_target(cfg, name, encoder_dir, tok, entry)

    _, results, hit = cache_entry.get_or_build(build)
    return results, hit


def compute_target(cfg, name: str, encoder_dir, tok, entry: dict, hooks: Hooks | None = None,
                   model=None) -> dict:
    """One target's results on this worker: fine-tune (unless retrieval, which embeds with `model` or the
    encoder directly), then evaluate."""
    device = device_for(cfg.device)
    task = TASKS[name]
    if KINDS[task.kind].head is not None:
        model = finetune_target(cfg, task, encoder_dir, tok, entry, device, cfg.seed, hooks)
    elif model is None:
        model = wrap(MultiTaskModel(load_encoder(encoder_dir)), cfg.distributed, device)
    return evaluate_target(cfg, task, model, tok, entry, device)


def sequential(fn: Callable, calls: list[tuple]) -> Iterator:
    """The default mapper: one target after another, in this process, each computed when its turn comes."""
    return (fn(*call) for call in calls)


# ---------------------------------------------------------------- the pipeline


class Pipeline:
    """One configuration's three phases. `prepare()` (phases 1-2), then iterate `targets()`."""

    def __init__(self, cfg: PipelineConfig, log=print, launcher=None):
        self.cfg, self.log, self.launcher = cfg, log, launcher  # launcher: runs jobs on several workers
        featcache.use(cfg.cache_dir)  # tokenised features are cached beside phases 2 and 3
        self.device = pick_device(cfg.device)
        if cfg.threads and self.device.type == "cpu":
            torch.set_num_threads(cfg.threads)  # the same kernels' splits, so the same scores, on any machine
        self.data_dir = Path(cfg.data_dir).resolve() if cfg.data_dir else None
        self.per_target: dict[str, dict] = {}
        self.notes: dict[str, dict] = {}
        self.timing: dict[str, float] = {}
        self.phase2: dict = {}
        self.probabilities: dict[str, float] = {}
        self.cache_hits = 0  # phase-3 results read back from the cache
        self._started = time.time()
        self._data = None

    def prepare(self) -> "Pipeline":
        if self._data is not None:
            return self
        cfg, started = self.cfg, time.time()
        set_seed(cfg.seed)
        ensure_toy_data(cfg, self.log)
        self._data = load_all(cfg, self.data_dir)
        self.timing["data_load_s"] = time.time() - started
        self.base = base_model(cfg, self.data_dir, self.log)
        self.tok = load_tokenizer(self.base, cfg.model.revision)
        ic = cfg.intermediate
        mixture = Mixture(ic.mixture, ic.sampler, ic.temperature, ic.cap)
        self.probabilities = mixture.probabilities({t: len(x) for t, x in self._data["intermediate"].items()})
        t1 = time.time()
        self.encoder_dir, self.phase2 = train_intermediate(cfg, self.base, self.tok, self._data["intermediate"],
                                                           mixture, self.device, self.data_dir, self.log,
                                                           self.launcher)
        if self._data["deduplicated"]:
            self.phase2["deduplicated"] = self._data["deduplicated"]
        self.timing.update({"phase1_and_data_s": t1 - started, "phase2_s": time.time() - t1})
        return self

    @property
    def order(self) -> list[str]:
        """Rung order: the targets that count in the validation average first — fine-tuned ones, then retrieval
        (BUCC) —, targets with only a test split (Tatoeba, XQuAD, TyDiQA) last. Retrieval is cheap but a poor
        first rung: it scores the phase-2 encoder untouched, and intermediate training that disturbs it may still
        win on every fine-tuned target (on a toy grid with lr up to 1e-3, TPE + ASHA with BUCC as the first rung
        found the best mixture in 1 of 50 seeds; with XNLI first in 47 of 50: benchmarks/search_efficiency.py)."""
        def rank(t: str) -> tuple[bool, bool]:
            trained = KINDS[TASKS[t].kind].head is not None
            return (not TASKS[t].has_validation, not trained if TASKS[t].has_validation else trained)

        return sorted(self.cfg.targets, key=rank)

    def params(self) -> dict:
        """What identifies this run in a tracker: settings, and the mixture probabilities it trains with."""
        cfg = self.cfg
        return {"base_model": cfg.model.name, "seed": cfg.seed, "intermediate.lr": cfg.intermediate.lr,
                "intermediate.steps": cfg.intermediate.steps, "intermediate.sampler": cfg.intermediate.sampler,
                "intermediate.temperature": cfg.intermediate.temperature, "target.lr": cfg.target.lr,
                **{names.mix_param(t): self.probabilities.get(t, 0.0) for t in INTERMEDIATE}}

    def targets(self, mapper: Mapper | None = None) -> Iterator[TargetResult]:
        """Each target's results in rung order, from the phase-3 cache or computed. `mapper` runs the
        fine-tuned targets that are not cached (default: one after another, in this process)."""
        self.prepare()
        cfg, data = self.cfg, self._data["targets"]
        entries = {n: phase3_entry(cfg, n, self.encoder_dir, self.data_dir, self.device) for n in self.order}
        cached = {n: e.get() for n, e in entries.items()}
        trained = [n for n in self.order if cached[n] is None and KINDS[TASKS[n].kind].head is not None]
        launched = iter((mapper or sequential)(
            phase3_job, [(cfg, n, self.encoder_dir, self.tok, data[n], entries[n], self.launcher) for n in trained]))
        retrieval_model, t0 = None, time.time()
        for name in self.order:
            task = TASKS[name]
            hit = cached[name] is not None
            if hit:
                results = cached[name]
            elif KINDS[task.kind].head is None and cfg.distributed.workers == 1:  # the encoder embeds directly
                if retrieval_model is None:
                    retrieval_model = MultiTaskModel(load_encoder(self.encoder_dir)).to(self.device)
                _, results, hit = entries[name].get_or_build(
                    lambda _tmp: compute_target(cfg, name, self.encoder_dir, self.tok, data[name], model=retrieval_model))
            elif KINDS[task.kind].head is None:  # retrieval, sharded over the workers
                results, hit = phase3_job(cfg, name, self.encoder_dir, self.tok, data[name], entries[name],
                                          self.launcher)
            else:
                results, hit = next(launched)
            self.per_target[name], self.notes[name] = results["splits"], results["notes"]
            self.cache_hits += hit
            seconds, t0 = time.time() - t0, time.time()
            self.timing[f"target/{name}_s"] = seconds
            yield TargetResult(name, results["splits"], results["notes"], hit, seconds)

    def english_train(self, name: str) -> list:
        """A target's English training examples (what phase 3 fine-tunes on), after the selection split."""
        return self.prepare()._data["targets"][name]["train"]

    def summary(self, split: str) -> dict:
        return summarise(self.per_target, split, self.notes)

    def results(self) -> dict:
        """The results JSON (DESIGN.md) of the targets computed so far."""
        cfg = self.cfg
        final = self.summary("test" if "test" in cfg.eval_splits else "validation")
        return {"name": cfg.name, **final, "validation": self.summary("validation"),
                "mixture": self.probabilities, "base_model": cfg.model.name, "seed": cfg.seed, "phase2": self.phase2,
                "timing": {**self.timing, "features_s": featcache.STATS["seconds"],
                           "total_s": time.time() - self._started}, "config": cfg.model_dump(),
                "distributed": cfg.distributed.model_dump(include={"workers", "strategy"}),
                "phase3_cache_hits": self.cache_hits}


def summarise(per_target: dict[str, dict], split: str, notes: dict | None = None) -> dict:
    """{"targets": {t: {"languages", "score", "notes"?}}, "average", "xtreme", "categories", "n_targets"} of one
    split (targets without that split are absent: XQuAD, TyDiQA and Tatoeba have no validation split)."""
    results = {t: v[split] for t, v in per_target.items() if split in v}
    scored = xtreme_score(results)
    targets = {t: {"languages": langs, "score": task_score(t, langs)} for t, langs in results.items()}
    for t in targets:
        if split == "test" and (notes or {}).get(t):
            targets[t]["notes"] = notes[t]
    return {"targets": targets, "average": scored["average"], "xtreme": scored["xtreme"],
            "categories": scored["categories"], "n_targets": len(results)}


def run_pipeline(cfg: PipelineConfig, tracker: Tracker | None = None, log=print, launcher=None) -> dict:
    """Phases 1-3 for one configuration; logs each target as a step to `tracker`; returns the results JSON."""
    tracker = tracker or NullTracker()
    pipe = Pipeline(cfg, log, launcher).prepare()
    tracker.log_params(pipe.params())
    tracker.set_tags({"cache_hit": str(pipe.phase2.get("cache_hit", False)).lower()})
    for rung, result in enumerate(pipe.targets(), start=1):
        for split in cfg.eval_splits:
            log_summary(tracker, pipe.summary(split), split, step=rung)
        log(f"  {result.name:10s} " + "  ".join(f"{s}: {task_score(result.name, v):.1f}"
                                                  for s, v in result.splits.items()))
    results = pipe.results()
    tracker.log_metrics({"time/total_s": results["timing"]["total_s"], "phase3_cache_hits": pipe.cache_hits})
    tracker.log_dict(results, "results.json")
    return results
