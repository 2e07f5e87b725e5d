"""Zero-shot evaluation per task kind: model outputs -> XTREME's per-language metrics (percent).

  classification  {"accuracy"}            tagging    {"f1"} (seqeval; PAN-X and UDPOS alike)
  span_qa         {"exact_match", "f1"}   (MLQA with its language-aware normalisation: the task's metric)
  retrieval       metric "accuracy": similarity search (Tatoeba); metric "f1": bitext mining with the
                  threshold tuned on the dev ("sample") split (BUCC)
Which evaluator serves which kind is recorded in the per-kind table, `trainables.kinds`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from trainables import metrics
from trainables.features import (IGNORE, featurize_classification, featurize_sentences, featurize_span_qa,
                                 featurize_tagging)
from trainables.tasks import Task
from trainables.train import embed, predict

MAX_ANSWER_TOKENS = 30


def evaluate_classification(model, task: Task, examples: Sequence[dict], tok, cfg, device, **_) -> dict:
    feats = featurize_classification(examples, tok, cfg.max_length)
    logits = predict(model, task.name, feats, cfg.eval_batch_size, tok.pad_token_id, device)
    return {"accuracy": metrics.accuracy([int(np.argmax(l)) for l in logits], [e["label"] for e in examples])}


def evaluate_tagging(model, task: Task, examples: Sequence[dict], tok, cfg, device, labels=(), **_) -> dict:
    feats = featurize_tagging(examples, tok, cfg.max_length, labels=labels)
    logits = predict(model, task.name, feats, cfg.eval_batch_size, tok.pad_token_id, device)
    pred_tags, gold_tags = [], []
    for f, l in zip(feats, logits):
        keep = [i for i, y in enumerate(f["labels"]) if y != IGNORE]  # first sub-words only
        pred_tags.append([labels[int(np.argmax(l[i]))] for i in keep])
        gold_tags.append([labels[f["labels"][i]] for i in keep])
    return {"f1": metrics.tag_f1(pred_tags, gold_tags)}


def best_spans(feats: Sequence[dict], logits: Sequence[np.ndarray], contexts: dict[str, str]) -> dict[str, str]:
    """Highest start+end logit span with start <= end < start + 30 inside the context, over all windows."""
    best: dict[str, tuple[float, str]] = {}
    for f, l in zip(feats, logits):
        start_l, end_l = l[:, 0], l[:, 1]
        inside = np.array([o is not None for o in f["offsets"]])
        starts = np.argsort(np.where(inside, start_l, -np.inf))[::-1][:20]
        ends = np.argsort(np.where(inside, end_l, -np.inf))[::-1][:20]
        for s in starts:
            for e in ends:
                if not (inside[s] and inside[e]) or e < s or e - s >= MAX_ANSWER_TOKENS:
                    continue
                score = float(start_l[s] + end_l[e])
                if score > best.get(f["example_id"], (-np.inf, ""))[0]:
                    ctx = contexts[f["example_id"]]
                    best[f["example_id"]] = (score, ctx[f["offsets"][s][0]:f["offsets"][e][1]])
    return {qid: text for qid, (score, text) in best.items()}


def evaluate_span_qa(model, task: Task, examples: Sequence[dict], tok, cfg, device, lang: str = "en", **_) -> dict:
    feats = featurize_span_qa(examples, tok, cfg.qa_max_length, doc_stride=cfg.doc_stride)
    logits = predict(model, task.name, feats, cfg.eval_batch_size, tok.pad_token_id, device)
    predictions = best_spans(feats, logits, {e["id"]: e["context"] for e in examples})
    references = {e["id"]: e["answers"]["text"] for e in examples}
    if task.metric == "mlqa":
        em, f1 = metrics.mlqa_em_f1(predictions, references, lang)
    else:
        em, f1 = metrics.squad_em_f1(predictions, references)
    return {"exact_match": em, "f1": f1}


def _embed(model, sentences, tok, cfg, device, layer_fraction):
    feats = featurize_sentences(sentences, tok, cfg.retrieval_max_length)
    return embed(model, feats, cfg.eval_batch_size, tok.pad_token_id, device, layer_fraction)


def evaluate_retrieval(model, task: Task, corpus: dict, tok, cfg, device, layer_fraction: float = 14 / 24,
                       threshold: float | None = None, **_) -> dict:
    """Tatoeba: top-1 accuracy. BUCC: F1 at `threshold` (None: the F1-optimal one on this split, as on dev)."""
    src = _embed(model, corpus["sources"], tok, cfg, device, layer_fraction)
    trg = _embed(model, corpus["targets"], tok, cfg, device, layer_fraction)
    if task.metric == "accuracy":  # similarity search
        gold = dict(corpus["gold"])
        keep = sorted(gold)
        return {"accuracy": metrics.tatoeba_accuracy(src[keep], trg, [gold[i] for i in keep])}
    candidates = metrics.bucc_candidates(src, trg, k=4)  # metric "f1": bitext mining
    if threshold is None:
        threshold = metrics.bucc_threshold(candidates, corpus["gold"])
    return {"f1": metrics.bucc_f1(candidates, corpus["gold"], threshold), "threshold": threshold}
