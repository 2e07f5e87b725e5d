"""The three-phase pipeline: what one trial of every search does. No Ray here.

  phase 1  the pretrained encoder (Hub id, local folder, or the toy model built from the toy corpus)
  phase 2  multi-task intermediate training on a Mixture -> encoder folder (content-addressed cache)
  phase 3  per target: a fresh head fine-tuned on English, zero-shot evaluation in every language;
           BUCC and Tatoeba embed with the phase-2 encoder directly
All data is loaded before any training, so a missing source fails in seconds, not hours.

Run:  python -m trainables run configs/pipeline/toy.yaml --json out.json
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Callable

from trainables import data as D
from trainables.config import PipelineConfig
from trainables.errors import XstiltsError
from trainables.evaluate import EVALUATORS
from trainables.metrics import task_score, xtreme_score
from trainables.mixture import Mixture
from trainables.model import MultiTaskModel, load_encoder, load_tokenizer, toy_model
from trainables.phase2 import data_fingerprint, encoder_id, train_intermediate
from trainables.tasks import TASKS, Task
from trainables.tracking import NullTracker, Tracker, flatten_results
from trainables.train import epoch_batches, fit, loss_fn, pick_device, set_seed

# jiant's XTREME recipe: epochs per target (QA 2, XNLI 2, PAWS-X 5, POS/NER 10).
EPOCHS = {"xnli": 2, "pawsx": 5, "udpos": 10, "panx": 10, "xquad": 2, "mlqa": 2, "tydiqa": 2}
Report = Callable[[dict, dict], None]  # (metrics of this rung, state to checkpoint: finished targets)


def load_all(cfg: PipelineConfig, data_dir: Path | None) -> dict:
    """Every example the run needs, loaded (and checked) up front."""
    mixture = {t: w for t, w in cfg.intermediate.mixture.items() if w > 0}
    out = {"intermediate": {t: D.load_split(t, "train", data_dir).get("en", []) for t in mixture}, "targets": {}}
    for name in cfg.targets:
        task = TASKS[name]
        entry = {split: D.load_split(task, split, data_dir) for split in ("validation", "test")}
        if task.kind != "retrieval":
            entry["train"] = D.load_split(task, "train", data_dir).get("en", [])
            if not entry["train"]:
                raise XstiltsError(f"target {name} has no English training data in {data_dir} "
                                   f"(it trains on {task.train_on}); prepare it or drop it from targets")
            entry["labels"] = D.tag_labels(task, entry["train"]) if task.kind == "tagging" else task.labels
        out["targets"][name] = entry
    return out


def ensure_toy_data(cfg: PipelineConfig, log=print) -> None:
    """The toy world needs no download: generate it when the toy model is asked for and data_dir is empty."""
    if cfg.model.name != "toy" or not cfg.data_dir:
        return
    data_dir = Path(cfg.data_dir)
    if not data_dir.exists() or not any(data_dir.iterdir()):
        from trainables.toy import write_toy

        log(f"writing the toy benchmark to {data_dir} (seed 0)")
        write_toy(data_dir, seed=0)


def base_model(cfg: PipelineConfig, data_dir: Path | None, device, log) -> Path | str:
    """Phase 1: the pretrained encoder's location."""
    if cfg.model.name == "toy":
        if data_dir is None:
            raise XstiltsError("model.name=toy needs data_dir (the toy benchmark: `xstilts data toy --out DIR`)")
        return toy_model(data_dir, Path(cfg.cache_dir), cfg.model, device, seed=0, log=log)
    return cfg.model.name


def finetune_target(cfg, task: Task, encoder_dir, tok, entry: dict, device, seed: int) -> MultiTaskModel:
    """Phase 3 training: a fresh head on the English training set; the best epoch on English dev is kept."""
    t = cfg.target
    qa = task.kind == "span_qa"
    set_seed(seed + sum(map(ord, task.name)))  # each target's run is reproducible on its own (and cacheable)
    model = MultiTaskModel(load_encoder(encoder_dir)).to(device)
    model.add_head(task.name, task.kind, len(entry["labels"] or ()))
    model.heads.to(device)
    examples = entry["train"][: t.max_train_examples]
    from trainables.features import featurize

    feats = featurize(task.kind, examples, tok, t.qa_max_length if qa else t.max_length, labels=entry["labels"] or (),
                      doc_stride=t.doc_stride)
    batch_size = t.qa_batch_size if qa else t.batch_size
    epochs = t.epochs.get(task.name, EPOCHS[task.name])
    per_epoch = max(1, math.ceil(len(feats) / (batch_size * t.grad_accum)))
    batches = epoch_batches(feats, batch_size, tok.pad_token_id, seed)

    def step_loss():
        b = {k: v.to(device) for k, v in next(batches).items()}
        return loss_fn(task.kind, model(task.name, b["input_ids"], b["attention_mask"]), b)

    dev = entry["validation"].get("en", [])[: 500]  # model selection on English dev only (zero-shot)
    best, best_state = -1.0, None
    for epoch in range(max(1, math.ceil(epochs))):
        steps = per_epoch if epoch < int(epochs) else max(1, round(per_epoch * (epochs - int(epochs))))
        fit(model, step_loss, steps, t.lr, device, t.grad_accum, progress=cfg.progress, desc=f"{task.name} ep{epoch}")
        if dev:
            score = _primary(evaluate_one(model, task, dev, tok, cfg, device, entry["labels"], "en"))
            if score > best:
                best, best_state = score, {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    return model


def _primary(values: dict) -> float:
    return (values["exact_match"] + values["f1"]) / 2 if "exact_match" in values else next(iter(values.values()))


def evaluate_one(model, task: Task, examples, tok, cfg, device, labels, lang, **kw) -> dict:
    return EVALUATORS[task.kind](model, task, examples, tok, cfg.target, device, labels=labels or (), lang=lang, **kw)


def evaluate_target(cfg, task: Task, model, tok, entry: dict, device) -> dict[str, dict]:
    """split -> lang -> metric -> value. Tasks without a test split (XQuAD, TyDiQA, Tatoeba) report their only
    labelled split as test, as XTREME does; BUCC's test threshold comes from its dev split."""
    out: dict[str, dict] = {"validation": {}, "test": {}}
    thresholds = {}
    cap = cfg.target.max_eval_examples
    for split in ("validation", "test"):
        if split not in cfg.eval_splits and not (split == "validation" and task.name == "bucc2018"):
            continue
        by_lang = entry[split] or (entry["validation"] if split == "test" else {})
        for lang, examples in by_lang.items():
            kw = {}
            if task.kind == "retrieval":
                kw = {"layer_fraction": cfg.model.retrieval_layer}
                examples = examples[0]
                if split == "test" and task.name == "bucc2018" and entry["test"]:
                    kw["threshold"] = thresholds.get(lang)
            else:
                examples = examples[:cap]
            values = evaluate_one(model, task, examples, tok, cfg, device, entry.get("labels"), lang, **kw)
            if "threshold" in values:
                thresholds[lang] = values.pop("threshold")
            out[split][lang] = values
    return {s: v for s, v in out.items() if s in cfg.eval_splits and v}


PHASE3_VERSION = "1"  # bump when phase-3 training or evaluation changes what it produces


def phase3_key(cfg, name: str, encoder_dir, data_dir) -> str:
    """Everything that determines one target's results: the encoder (a cache entry's own key), the target
    settings, the seed, the evaluation splits, the retrieval layer and the target's data files."""
    payload = {"encoder": encoder_id(encoder_dir), "revision": cfg.model.revision, "target": cfg.target.model_dump(),
               "seed": cfg.seed, "splits": cfg.eval_splits, "layer": cfg.model.retrieval_layer, "name": name,
               "data": data_fingerprint(data_dir, {name, TASKS[name].train_on or name}, pattern="*"), "version": PHASE3_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def phase3_path(cfg, name: str, encoder_dir, data_dir) -> Path:
    return Path(cfg.cache_dir).resolve() / "phase3" / f"{name}-{phase3_key(cfg, name, encoder_dir, data_dir)}.json"


def read_phase3(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or a corrupted entry: recompute
        return None


def write_phase3(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results))
    tmp.rename(path)  # atomic


def train_and_evaluate(cfg, name: str, encoder_dir, tok, entry: dict) -> dict:
    """Phase 3 for one fine-tuned target, self-contained so it can run in another process (fan-out)."""
    device = pick_device(cfg.device)
    task = TASKS[name]
    model = finetune_target(cfg, task, encoder_dir, tok, entry, device, cfg.seed)
    return evaluate_target(cfg, task, model, tok, entry, device)


def sequential(fn, calls):
    """The default target mapper: one target after another, each computed when its rung comes."""
    return (fn(*call) for call in calls)


def _summary(per_target: dict[str, dict], split: str) -> dict:
    results = {t: v[split] for t, v in per_target.items() if split in v}
    scored = xtreme_score(results)
    return {"targets": {t: {"languages": langs, "score": task_score(t, langs)} for t, langs in results.items()},
            "xtreme": scored["xtreme"], "categories": scored["categories"]}


def run_pipeline(cfg: PipelineConfig, report: Report | None = None, tracker: Tracker | None = None,
                 log=print, done: dict[str, dict] | None = None, target_map=None) -> dict:
    """Phases 1-3 for one configuration; returns the results JSON (DESIGN.md).

    `report(metrics, state)` is called once per target (a fidelity rung: cheap retrieval targets first,
    then each fine-tuned target) with the running `validation/xtreme` and `test/xtreme`. `done` (a previous
    state's finished targets) makes a resumed run skip them; phase 2 comes back from its cache.
    `target_map(fn, calls)` runs the fine-tuned targets (default: one after another, in this process; the
    search passes one that fans them out over a placement group) and yields their results in order.
    """
    tracker = tracker or NullTracker()
    started = time.time()
    set_seed(cfg.seed)
    device = pick_device(cfg.device)
    ensure_toy_data(cfg, log)
    data_dir = Path(cfg.data_dir).resolve() if cfg.data_dir else None
    data = load_all(cfg, data_dir)
    base = base_model(cfg, data_dir, device, log)
    tok = load_tokenizer(base, cfg.model.revision)
    mixture = Mixture(cfg.intermediate.mixture, cfg.intermediate.sampler, cfg.intermediate.temperature,
                      cfg.intermediate.cap)
    sizes = {t: len(x) for t, x in data["intermediate"].items()}
    probs = mixture.probabilities(sizes)
    tracker.log_params({"base_model": cfg.model.name, "seed": cfg.seed, "intermediate.lr": cfg.intermediate.lr,
                        "intermediate.steps": cfg.intermediate.steps, "target.lr": cfg.target.lr,
                        **{f"mix/{t}": probs.get(t, 0.0) for t in TASKS if TASKS[t].role == "intermediate"}})
    t1 = time.time()
    encoder_dir, phase2 = train_intermediate(cfg, base, tok, data["intermediate"], mixture, device, data_dir, log)
    tracker.set_tags({"cache_hit": str(phase2.get("cache_hit", False)).lower()})
    timing = {"phase1_and_data_s": t1 - started, "phase2_s": time.time() - t1}
    per_target: dict[str, dict] = dict(done or {})
    order = sorted(cfg.targets, key=lambda t: TASKS[t].kind != "retrieval")  # cheap retrieval rung first
    todo = [n for n in order if n not in per_target]  # finished targets survive a restart
    paths = {n: phase3_path(cfg, n, encoder_dir, data_dir) for n in todo}
    cached = {n: r for n in todo if (r := read_phase3(paths[n])) is not None}
    trained = [n for n in todo if n not in cached and TASKS[n].kind != "retrieval"]
    launched = iter((target_map or sequential)(
        train_and_evaluate, [(cfg, n, encoder_dir, tok, data["targets"][n]) for n in trained]))
    retrieval_model, t0 = None, time.time()
    for rung, name in enumerate(order, start=1):
        task = TASKS[name]
        if name not in todo:
            continue
        if name in cached:
            per_target[name] = cached[name]
        else:
            if task.kind == "retrieval":
                retrieval_model = retrieval_model or MultiTaskModel(load_encoder(encoder_dir)).to(device)
                per_target[name] = evaluate_target(cfg, task, retrieval_model, tok, data["targets"][name], device)
            else:
                per_target[name] = next(launched)
            write_phase3(paths[name], per_target[name])
        timing[f"target/{name}_s"], t0 = time.time() - t0, time.time()
        partial = {s: _summary(per_target, s) for s in cfg.eval_splits}
        for s, summ in partial.items():
            tracker.log_metrics(flatten_results(summ, "" if s == "test" else "validation/"), step=rung)
        if report:
            report({"rung": rung, "target": name, **{f"{s}/xtreme": v["xtreme"] for s, v in partial.items()}},
                   {"per_target": per_target})
        log(f"  {name:10s} " + "  ".join(f"{s}: {task_score(name, v):.1f}" for s, v in per_target[name].items()))
    hits = len(cached)
    final = _summary(per_target, "test" if "test" in cfg.eval_splits else "validation")
    results = {"name": cfg.name, **final, "validation": _summary(per_target, "validation"),
               "mixture": probs, "base_model": cfg.model.name, "seed": cfg.seed, "phase2": phase2,
               "timing": {**timing, "total_s": time.time() - started}, "config": cfg.model_dump()}
    results["phase3_cache_hits"] = hits
    tracker.log_metrics({"time/total_s": results["timing"]["total_s"], "phase3_cache_hits": hits})
    tracker.log_dict(results, "results.json")
    return results
