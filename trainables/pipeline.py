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
A phase-3 entry keeps, beside its metrics, the test split's per-example predictions the evaluators scored
(`PREDICTIONS`); `Pipeline(cfg, predictions=True)` recomputes a target whose entry predates them, and
`write_predictions(DIR)` (`xstilts run ... --predictions DIR`) writes XTREME's submission layout
(`trainables.predictions`).

Run:  python -m trainables run configs/pipeline/toy.yaml --json out.json
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from trainables import checkpoints
from trainables import data as D
from trainables import names
from trainables.cache import Cache, Entry, entry_id
from trainables.checkpoints import LocalHooks
from trainables.config import PipelineConfig, loader_workers
from trainables.errors import XstiltsError
from trainables.kinds import KINDS, featurize, labels_of
from trainables.metrics import describe, primary, task_score, xtreme_score
from trainables.mixture import Mixture
from trainables.model import MultiTaskModel, load_encoder, load_tokenizer
from trainables.toymodel import toy_model
from trainables.distributed import device_for, local_rows, rank0_says, shared_loss, wrap
from trainables import featcache, planted, progress
from trainables.featcache import derived, take
from trainables.phase2 import encoder_id, mixture_sizes, require, train_intermediate
from trainables.predictions import PREDICTIONS, load_records, save_records, write_submission
from trainables.rungs import finetune_group, run_targets, target_splits
from trainables.tasks import INTERMEDIATE, TASKS, Task
from trainables.tracking import NullTracker, Tracker, log_summary
from trainables.train import Hooks, epoch_batches, fit, pick_device, set_seed
from trainables.codever import code_version

Mapper = Callable[[Callable, list[tuple]], Iterable]  # (fn, argument tuples) -> results in the same order


@dataclass(frozen=True)
class TargetResult:
    """One target's scores (split -> language -> metric -> value) and notes (e.g. BUCC's threshold_from)."""

    name: str
    splits: dict[str, dict[str, dict[str, float]]]
    notes: dict
    cached: bool
    seconds: float


HOLDOUT_EVERY = 10  # "holdout" selection: every 10th English training example is held out


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
        return derived(kept, key, {"holdout": "kept"}), derived(held, key, {"holdout": "held"})
    return train, D.load_split(source, "validation", data_dir, languages=["en"]).get("en", [])


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
    """Phase 3 training: a fresh head on the English training set, one linear schedule over all epochs (jiant).
    Model selection as jiant's runner (`target.selection`): every `every_steps` optimiser steps and after the
    last, the model is scored on the first `subset` of the task's English selection examples (`selection_split`,
    never a split reported as test); the best is kept, and `patience` validations without improvement stop the
    run early. Returns (model with the best weights, what selection did); its head serves every target of
    `finetune_group`. Runs on one process or as one of several workers (DDP/FSDP2)."""
    t = cfg.target
    kind = KINDS[task.kind]
    group = finetune_group(cfg, task.name)
    head = group[0]  # the group's first target names the seed and the head, and selects (its metric)
    task = TASKS[head]
    set_seed(seed + sum(map(ord, head)))  # each fine-tune is reproducible on its own (and cacheable)
    model = MultiTaskModel(load_encoder(encoder_dir))
    model.add_head(head, task.kind, len(entry["labels"] or ()), serves=group[1:])
    model = wrap(model, cfg.distributed, device)
    examples = take(entry["train"], t.max_train_examples)
    feats = featurize(task.kind, examples, tok, t.qa_max_length if kind.qa else t.max_length,
                      labels=entry["labels"] or (), doc_stride=t.doc_stride)
    batch_size = t.qa_batch_size if kind.qa else t.batch_size
    epochs = t.epochs.get(task.name, task.epochs)
    per_epoch = max(1, math.ceil(len(feats) / (batch_size * t.grad_accum)))
    total = max(1, round(per_epoch * epochs))
    batches = epoch_batches(feats, batch_size, tok.pad_token_id, seed, loader_workers(cfg, device))

    def draw():
        batch = next(batches)
        return local_rows(batch, device)  # this worker's rows

    sel = t.selection
    dev = take(entry["selection"], sel.subset)  # zero-shot model selection: English, never a split reported as test
    # the selection state, saved with checkpoints: best score and step, validations since the best, all scores
    best: dict = {"score": -1.0, "best_step": 0, "since": 0, "history": []}

    def on_step(step: int) -> bool:
        """Validate when due; True: stop early (every worker gets the same scores, so decides the same)."""
        if not dev or (step % sel.every_steps and step != total):
            return False
        score = primary(evaluate_one(model, task, dev, tok, cfg, device, entry["labels"], "en"))
        best.update(since=best["since"] + 1, history=[*best["history"], [step, score]])
        if score > best["score"]:  # strictly better, as jiant
            best.update(score=score, best_step=step, since=0,
                        state={k: v.detach().clone() for k, v in model.state_dict().items()})
        # jiant stops once `patience` validations passed without improvement (right after one: nothing
        # changed since, so its last validation at the stop is the one just made)
        return rank0_says(bool(sel.patience) and best["since"] >= sel.patience and step != total)

    ran = fit(model, draw, lambda b: shared_loss(kind.loss, model(head, b["input_ids"], b["attention_mask"]), b),
              total, t.lr, device, t.grad_accum, progress=cfg.progress, desc=task.name, hooks=hooks, on_step=on_step,
              extra=best)
    if best.get("state") is not None:
        model.load_state_dict(best["state"])
    note = {"best_step": best["best_step"], "steps": ran["steps"], "planned_steps": total, "subset": len(dev),
            "history": best["history"]}  # [step, English selection score] per validation
    return model, note


def evaluate_one(model, task: Task, examples, tok, cfg, device, labels, lang, **kw) -> dict:
    return KINDS[task.kind].evaluate(model, task, examples, tok, cfg.target, device, labels=labels or (), lang=lang,
                                     **kw)


def evaluate_target(cfg, task: Task, model, tok, entry: dict, device) -> dict:
    """{"splits": split -> lang -> metric -> value, "notes": {...}} for the splits the target has (XQuAD, TyDiQA
    and Tatoeba: test only). Bitext mining (BUCC) tunes its threshold on validation and applies it to test;
    `notes["threshold_from"]` says per language where each test threshold came from. `predictions`: lang -> what
    was scored on test, as the evaluator handed it back (`trainables.evaluate`, `record=`): what phase 3 stores
    in the target's cache entry for `trainables.predictions`."""
    mining = task.kind == "retrieval" and task.metric == "f1"
    splits: dict[str, dict] = {"validation": {}, "test": {}}
    thresholds, origins, notes, records = {}, {}, {}, {}
    cap = cfg.target.max_eval_examples
    wanted = target_splits(cfg, task.name)
    for split in ("validation", "test"):
        if split not in wanted and not (split == "validation" and mining):
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
            if split == "test":
                kw["record"] = records.setdefault(lang, {})
            values = evaluate_one(model, task, examples, tok, cfg, device, entry.get("labels"), lang, **kw)
            if mining:
                threshold, origin = values.pop("threshold"), values.pop("threshold_from")
                if split == "validation":
                    thresholds[lang], origins[lang] = threshold, origin
                else:
                    notes.setdefault("threshold_from", {})[lang] = origins.get(lang, "test itself (no dev data)")
            splits[split][lang] = values
    return {"splits": {s: v for s, v in splits.items() if s in wanted and v}, "notes": notes,
            "predictions": records}


def phase3_entry(cfg, name: str, encoder_dir, data_dir: Path | None, device) -> Entry:
    """The cache entry of one target's results. Its key: the encoder (a cache entry's own key), the target
    settings, the seed, the splits it evaluates (`target_splits`), the retrieval layer, the data the target reads (its training
    task's English training set and its evaluation splits), the precision (device type) and the version."""
    task = TASKS[name]
    payload = {"target": name, "encoder": encoder_id(encoder_dir), "revision": cfg.model.revision,
               "settings": cfg.target.model_dump(), "seed": cfg.seed, "splits": target_splits(cfg, name),
               "layer": cfg.model.retrieval_layer, "precision": device.type, "code": code_version("phase3"),
               "distributed": cfg.distributed.model_dump(include={"workers", "strategy", "mixed_precision"}),
               "data": {s: D.inputs(task, s, data_dir) for s in ("train", "validation", "test")
                        if s != "train" or KINDS[task.kind].head is not None},
               "selection": selection_inputs(task, data_dir) if KINDS[task.kind].head is not None else None}
    return Cache(cfg.cache_dir).entry("phase3", payload)


def stored(tmp: Path, results: dict) -> dict:
    """A target's results as its phase-3 entry keeps them: the test split's predictions in a file (`PREDICTIONS`),
    the metrics and notes in the manifest (what a cache hit returns)."""
    save_records(Path(tmp) / PREDICTIONS, results.get("predictions") or {})
    return {k: v for k, v in results.items() if k != "predictions"}


def has_predictions(path: Path) -> bool:
    """Whether a phase-3 entry holds its test predictions (entries written before they were kept do not: with
    `predictions` asked for, those are recomputed, under the same key; otherwise they stay cache hits)."""
    return (Path(path) / PREDICTIONS).is_file()


def check_predictions(cfg: PipelineConfig) -> None:
    """Test predictions need the test split evaluated (checked before anything runs)."""
    if "test" not in cfg.eval_splits:
        raise XstiltsError("predictions are written for the test split, which eval_splits leaves out",
                           "add test to eval_splits (eval_splits=[validation,test])")


def phase3_job(cfg, names: list[str], encoder_dir, tok, entries: dict[str, dict], cache_entries: dict[str, Entry],
               launcher=None, predictions: bool = False) -> dict[str, tuple[dict, bool]]:
    """Phase 3 for targets that share one fine-tune (`finetune_group`; most often one target), each through its
    own cache entry; self-contained, so it can run in another process (the search fans targets out over a
    placement group) or, with `distributed.workers > 1`, as a job of `launcher` (Ray Train workers). The
    fine-tune runs once, when the first entry that is not in the cache is built. Returns name -> ({"splits",
    "notes"}, cache hit). `predictions`: an entry without its test predictions is no hit (`has_predictions`)."""
    job = f"phase3-{cache_entries[names[0]].key}"
    computed: dict[str, dict] = {}

    def compute() -> dict[str, dict]:
        if cfg.distributed.workers > 1:
            return require(launcher)({"kind": "phase3", "cfg": cfg.model_dump(), "targets": list(names),
                                      "encoder": str(encoder_dir), "key": job})
        return compute_targets(cfg, names, encoder_dir, tok, entries,
                               LocalHooks(checkpoints.local_folder(cfg.cache_dir, job), cfg.checkpoint))

    def build(name):
        def into(tmp):
            if not computed:
                computed.update(compute())
            return stored(tmp, computed[name])
        return into

    out = {}
    for name in names:
        _, results, hit = cache_entries[name].get_or_build(build(name), has_predictions if predictions else None)
        out[name] = (results, hit)
    checkpoints.drop(cfg.cache_dir, job)  # the entries hold the results now
    return out


def compute_targets(cfg, names: list[str], encoder_dir, tok, entries: dict[str, dict], hooks: Hooks | None = None,
                    model=None) -> dict[str, dict]:
    """Targets' results on this worker: one fine-tune for all of them (they share it: `finetune_group`) unless
    they are retrieval (one target, which embeds with `model` or the encoder directly), then each evaluated."""
    device = device_for(cfg.device)
    task = TASKS[names[0]]
    selection = None
    if KINDS[task.kind].head is not None:
        assert set(names) <= set(finetune_group(cfg, names[0])), names
        model, selection = finetune_target(cfg, task, encoder_dir, tok, entries[names[0]], device, cfg.seed, hooks)
    elif model is None:
        model = wrap(MultiTaskModel(load_encoder(encoder_dir)), cfg.distributed, device)
    out = {}
    for name in names:
        out[name] = evaluate_target(cfg, TASKS[name], model, tok, entries[name], device)
        if selection:
            out[name]["notes"]["selection"] = selection
    return out


def sequential(fn: Callable, calls: list[tuple]) -> Iterator:
    """The default mapper: one target after another, in this process, each computed when its turn comes."""
    return (fn(*call) for call in calls)


# ---------------------------------------------------------------- the pipeline


class Pipeline:
    """One configuration's three phases. `prepare()` (phases 1-2), then iterate `targets()`."""

    def __init__(self, cfg: PipelineConfig, log=print, launcher=None, predictions: bool = False,
                 encoder: Path | None = None):
        self.cfg, self.log, self.launcher = cfg, log, launcher  # launcher: runs jobs on several workers
        self.encoder = encoder  # a phase-2 encoder folder to use instead of running phase 2 (search/export.py)
        if predictions:
            check_predictions(cfg)
        self.predictions = predictions  # every target's phase-3 entry must hold its test predictions
        self.prediction_files: dict[str, Path] = {}  # target -> its entry's PREDICTIONS file
        featcache.use(cfg.cache_dir)  # tokenised features are cached beside phases 2 and 3
        progress.switch(cfg.progress)  # bars (on a terminal) for tokenising, evaluation, embedding, mining
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
        self._params: float | None = None  # the size the planted scaling knob reads (trainables/planted.py)
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
        self.probabilities = mixture.probabilities(mixture_sizes(cfg, self.tok, self._data["intermediate"]))
        t1 = time.time()
        if self.encoder is not None:  # a phase-2 encoder given as is (export: the one a search trial trained)
            self.encoder_dir, self.phase2 = Path(self.encoder), {"cache_hit": True, "dir": str(self.encoder)}
        else:
            self.encoder_dir, self.phase2 = train_intermediate(cfg, self.base, self.tok, self._data["intermediate"],
                                                               mixture, self.device, self.data_dir, self.log,
                                                               self.launcher)
        if self._data["deduplicated"]:
            self.phase2["deduplicated"] = self._data["deduplicated"]
        self.timing.update({"phase1_and_data_s": t1 - started, "phase2_s": time.time() - t1})
        return self

    def cache_entries(self) -> list[str]:
        """The cache entries (`<kind>-<key>`) this configuration uses: its base encoder when it is one (the toy
        model), its phase-2 encoder, and each target's phase-3 results (`xstilts cache prune` keeps what the best
        trials of named searches use)."""
        self.prepare()
        out = {entry_id(self.base), entry_id(self.encoder_dir)} - {None}
        out |= {f"phase3-{phase3_entry(self.cfg, n, self.encoder_dir, self.data_dir, self.device).key}"
                for n in self.order}
        return sorted(out)

    @property
    def order(self) -> list[str]:
        return run_targets(self.cfg)

    def params(self) -> dict:
        """What identifies this run in a tracker: settings, and the mixture probabilities it trains with."""
        cfg = self.cfg
        return {"base_model": cfg.model.name, "seed": cfg.seed, "intermediate.lr": cfg.intermediate.lr,
                "intermediate.steps": cfg.intermediate.steps, "intermediate.sampler": cfg.intermediate.sampler,
                "intermediate.temperature": cfg.intermediate.temperature, "target.lr": cfg.target.lr,
                **{names.mix_param(t): self.probabilities.get(t, 0.0) for t in INTERMEDIATE},
                **({"planted_scaling.slope": cfg.planted_scaling.slope} if cfg.planted_scaling.slope else {})}

    def dataset_inputs(self) -> list[dict]:
        """The task sources this run reads, for the tracker (trainables.tasks.dataset_inputs)."""
        from trainables.tasks import dataset_inputs

        cfg = self.cfg
        return dataset_inputs([t for t, p in self.probabilities.items() if p > 0], cfg.targets, cfg.data_dir,
                              cfg.model.name == "toy")

    def targets(self, mapper: Mapper | None = None) -> Iterator[TargetResult]:
        """Each target's results in rung order, from the phase-3 cache or computed. `mapper` runs the
        fine-tuned targets that are not cached (default: one after another, in this process)."""
        self.prepare()
        cfg, data = self.cfg, self._data["targets"]
        entries = {n: phase3_entry(cfg, n, self.encoder_dir, self.data_dir, self.device) for n in self.order}
        accept = has_predictions if self.predictions else None
        cached = {n: e.get() if accept is None or accept(e.path) else None for n, e in entries.items()}
        groups: list[list[str]] = []  # targets to compute, by shared fine-tune, in the order of their first
        for n in (n for n in self.order if cached[n] is None and KINDS[TASKS[n].kind].head is not None):
            same = next((g for g in groups if n in finetune_group(cfg, g[0])), None)
            same.append(n) if same is not None else groups.append([n])
        launched = iter((mapper or sequential)(
            phase3_job, [(cfg, g, self.encoder_dir, self.tok, {n: data[n] for n in g}, {n: entries[n] for n in g},
                          self.launcher, self.predictions) for g in groups]))
        computed: dict[str, tuple[dict, bool]] = {}
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
                    lambda tmp: stored(tmp, compute_targets(cfg, [name], self.encoder_dir, self.tok, {name: data[name]},
                                                            model=retrieval_model)[name]), accept)
            elif KINDS[task.kind].head is None:  # retrieval, sharded over the workers
                results, hit = phase3_job(cfg, [name], self.encoder_dir, self.tok, {name: data[name]},
                                          {name: entries[name]}, self.launcher, self.predictions)[name]
            else:
                while name not in computed:  # its group is the next one launched (groups come in rung order)
                    computed.update(next(launched))
                results, hit = computed[name]
            self.per_target[name] = planted.shifted(name, results["splits"], self.planted_shift())
            self.notes[name] = results["notes"]
            if self.predictions:
                self.prediction_files[name] = entries[name].path / PREDICTIONS
            self.cache_hits += hit
            seconds, t0 = time.time() - t0, time.time()
            self.timing[f"target/{name}_s"] = seconds
            yield TargetResult(name, self.per_target[name], results["notes"], hit, seconds)  # planted shift in

    def write_predictions(self, out: Path) -> list[Path]:
        """The test predictions and gold of the targets computed so far in XTREME's submission layout under `out`
        (`trainables.predictions`), read from their phase-3 entries; needs `Pipeline(..., predictions=True)`."""
        if not self.predictions:
            raise ValueError("Pipeline(..., predictions=True) keeps the entries' predictions")
        records = {name: load_records(path) for name, path in self.prediction_files.items()}
        for name, langs in records.items():
            assert set(langs) == set(self.per_target[name].get("test", {})), (name, "predictions cover what was scored")
        return write_submission(Path(out), records)

    def english_train(self, name: str) -> list:
        """A target's English training examples (what phase 3 fine-tunes on), after the selection split."""
        return self.prepare()._data["targets"][name]["train"]

    def planted_shift(self) -> float:
        """Points the toy's planted scaling truth adds to this run's scores (0: knob off, or no intermediate task)."""
        knob = self.cfg.planted_scaling
        if not knob.slope or not self.prepare().probabilities:
            return 0.0
        if self._params is None:
            self._params = knob.params or planted.encoder_params(self.base)
        return planted.shift(knob.slope, self._params)

    def summary(self, split: str) -> dict:
        return summarise(self.per_target, split, self.notes, self.cfg.target.max_eval_examples)

    def results(self) -> dict:
        """The results JSON (DESIGN.md) of the targets computed so far."""
        cfg = self.cfg
        final = self.summary("test" if "test" in cfg.eval_splits else "validation")
        return {"name": cfg.name, **final, "validation": self.summary("validation"),
                "mixture": self.probabilities, "base_model": cfg.model.name, "seed": cfg.seed, "phase2": self.phase2,
                "timing": {**self.timing, "features_s": featcache.STATS["seconds"],
                           "total_s": time.time() - self._started}, "config": cfg.model_dump(),
                "distributed": cfg.distributed.model_dump(include={"workers", "strategy"}),
                "phase3_cache_hits": self.cache_hits,
                **({"planted_scaling": {"slope": cfg.planted_scaling.slope, "params": self._params,
                                        "shift": self.planted_shift()}} if self.planted_shift() else {})}


def summarise(per_target: dict[str, dict], split: str, notes: dict | None = None,
              max_eval_examples: int | None = None) -> dict:
    """{"targets": {t: {"languages", "score", "notes"?}}, "average", "xtreme", "score_name", "missing",
    "categories", "n_targets"} of one split (targets without that split are absent: XQuAD, TyDiQA and Tatoeba have
    no validation split). `xtreme` only for what XTREME would print (`metrics.xtreme_score`: nine targets, every
    language, whole test sets — `max_eval_examples` caps them — and no BUCC threshold from gold-only dev pairs);
    else `score_name` says "average of k targets (not XTREME: ...)" and `missing` lists what is missing."""
    results = {t: v[split] for t, v in per_target.items() if split in v}
    stand_ins = {t: [lang for lang, origin in (notes or {}).get(t, {}).get("threshold_from", {}).items()
                     if "gold-only" in str(origin)] for t in results} if split == "test" else {}
    scored = xtreme_score(results, max_eval_examples, stand_ins)
    targets = {t: {"languages": langs, "score": task_score(t, langs)} for t, langs in results.items()}
    for t in targets:
        if split == "test" and (notes or {}).get(t):
            targets[t]["notes"] = notes[t]
    return {"targets": targets, "average": scored["average"], "xtreme": scored["xtreme"],
            "score_name": describe(scored["missing"], len(results)), "missing": scored["missing"],
            "categories": scored["categories"], "n_targets": len(results)}


def run_pipeline(cfg: PipelineConfig, tracker: Tracker | None = None, log=print, launcher=None,
                 predictions: Path | str | None = None) -> dict:
    """Phases 1-3 for one configuration; logs each target as a step to `tracker`; returns the results JSON.
    `predictions`: a folder for the test predictions in XTREME's submission layout (`trainables.predictions`)."""
    tracker = tracker or NullTracker()
    pipe = Pipeline(cfg, log, launcher, predictions=predictions is not None).prepare()
    tracker.log_params(pipe.params())
    tracker.set_tags({"cache_hit": str(pipe.phase2.get("cache_hit", False)).lower()})
    tracker.log_inputs(pipe.dataset_inputs())
    for rung, result in enumerate(pipe.targets(), start=1):
        for split in cfg.eval_splits:
            log_summary(tracker, pipe.summary(split), split, step=rung)
        log(f"  {result.name:10s} " + "  ".join(f"{s}: {task_score(result.name, v):.1f}"
                                                  for s, v in result.splits.items()))
    if predictions is not None:
        files = pipe.write_predictions(Path(predictions))
        log(f"test predictions of {len(pipe.prediction_files)} targets in XTREME's submission layout: "
            f"{Path(predictions).resolve()} (predictions/, labels/, predictions.zip; {len(files)} files)")
    results = pipe.results()
    tracker.log_metrics({"time/total_s": results["timing"]["total_s"], "phase3_cache_hits": pipe.cache_hits})
    tracker.log_dict(results, "results.json")
    return results
