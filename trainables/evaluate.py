"""Zero-shot evaluation per task kind: model outputs -> XTREME's per-language metrics (percent).

  classification  {"accuracy"}            tagging    {"f1"} (seqeval; PAN-X and UDPOS alike)
  span_qa         {"exact_match", "f1"}   (MLQA with its language-aware normalisation: the task's metric)
  retrieval       metric "accuracy": similarity search (Tatoeba); metric "f1": bitext mining with the
                  threshold tuned on the dev ("sample") split (BUCC)
Which evaluator serves which kind is recorded in the per-kind table, `trainables.kinds`.

Every evaluator takes `record=`: a dict it fills with exactly what it scored, `{"predicted", "gold"}` — the
lists the metric was computed from, so written predictions (`trainables.predictions`) are the scored ones:
  classification  predicted / gold label ids, one per example
  tagging         predicted / gold tag names, one list per sentence
  span_qa         predicted {question id: answer text} (every question; "" where no span qualified);
                  gold [{"id", "context", "question", "answers": {"text", "answer_start"}}]
  retrieval       Tatoeba: predicted source index per gold pair, gold [[i, j]]; BUCC: predicted pairs
                  [[i, j]] (score >= the threshold), gold [[i, j]] (0-based sentence positions; BUCC's own
                  sentence ids instead where the corpus carries them: `source_ids`, `target_ids`)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from trainables import metrics, retrieval
from trainables.featcache import cached, derived
from trainables.features import (IGNORE, featurize_classification, featurize_sentences, featurize_span_qa,
                                 featurize_tagging)
from trainables.tasks import Task
from trainables.train import embed, predict

MAX_ANSWER_TOKENS, N_BEST = 30, 20


def _keep(record: dict | None, predicted, gold) -> None:
    """Hand back what was scored (module docstring), when the caller asked for it."""
    if record is not None:
        record.update(predicted=predicted, gold=gold)


def evaluate_classification(model, task: Task, examples: Sequence[dict], tok, cfg, device, record=None, **_) -> dict:
    feats = cached(featurize_classification, examples, tok, cfg.max_length)
    logits = predict(model, task.name, feats, cfg.eval_batch_size, tok.pad_token_id, device)
    predicted, gold = [int(np.argmax(l)) for l in logits], [e["label"] for e in examples]
    _keep(record, predicted, gold)
    return {"accuracy": metrics.accuracy(predicted, gold)}


def evaluate_tagging(model, task: Task, examples: Sequence[dict], tok, cfg, device, labels=(), record=None,
                     **_) -> dict:
    """Predicted tags of every word (chunks of a long sentence joined back) against the gold tags."""
    feats = cached(featurize_tagging, examples, tok, cfg.max_length, labels=tuple(labels))
    logits = predict(model, task.name, feats, cfg.eval_batch_size, tok.pad_token_id, device)
    pred_tags: list[list[str]] = [[] for _ in examples]
    for f, l in zip(feats, logits):  # chunks come in sentence order, first chunk first
        keep = [i for i, y in enumerate(f["labels"]) if y != IGNORE]  # first sub-words only
        pred_tags[f["sentence"]] += [labels[int(np.argmax(l[i]))] for i in keep]
    gold_tags = [list(e["tags"]) for e in examples]
    assert all(len(p) == len(g) for p, g in zip(pred_tags, gold_tags)), "every word is tagged once (chunking)"
    _keep(record, pred_tags, gold_tags)
    return {"f1": metrics.tag_f1(pred_tags, gold_tags)}


def best_spans(feats: Sequence[dict], logits: Sequence[np.ndarray], contexts: dict[str, str]) -> dict[str, str]:
    """The answer of each question as XTREME's SQuAD v1.1 post-processing picks it (`compute_predictions_logits`,
    n_best 20, max_answer_length 30): per window, the 20 best start and 20 best end positions; a pair counts
    only if both lie in the document, the start is a max-context token of this window, end >= start and the
    span has at most 30 tokens; the best start + end logit over all windows wins."""
    best: dict[str, tuple[float, str]] = {}
    for f, l in zip(feats, logits):
        start_l, end_l = l[:, 0], l[:, 1]
        starts = np.argsort(-start_l, kind="stable")[:N_BEST]
        ends = np.argsort(-end_l, kind="stable")[:N_BEST]
        offsets, max_context = f["offsets"], f["max_context"]
        for s in starts:
            if offsets[s][0] < 0 or not max_context[s]:  # outside the document, or not its max-context window
                continue
            for e in ends:
                if offsets[e][0] < 0 or e < s or e - s + 1 > MAX_ANSWER_TOKENS:
                    continue
                score = float(start_l[s] + end_l[e])
                if score > best.get(f["example_id"], (-np.inf, ""))[0]:
                    ctx = contexts[f["example_id"]]
                    best[f["example_id"]] = (score, ctx[offsets[s][0]:offsets[e][1]])
    return {qid: text for qid, (score, text) in best.items()}


def evaluate_span_qa(model, task: Task, examples: Sequence[dict], tok, cfg, device, lang: str = "en", record=None,
                     **_) -> dict:
    feats = cached(featurize_span_qa, examples, tok, cfg.qa_max_length, doc_stride=cfg.doc_stride)
    logits = predict(model, task.name, feats, cfg.eval_batch_size, tok.pad_token_id, device)
    spans = best_spans(feats, logits, {e["id"]: e["context"] for e in examples})
    predictions = {e["id"]: spans.get(e["id"], "") for e in examples}  # the metrics score a missing answer as ""
    references = {e["id"]: e["answers"]["text"] for e in examples}
    gold = {e["id"]: {"id": e["id"], "context": e["context"], "question": e["question"],  # one per id, as scored
                      "answers": {"text": list(e["answers"]["text"]),
                                  "answer_start": [int(s) for s in e["answers"]["answer_start"]]}} for e in examples}
    _keep(record, predictions, list(gold.values()))
    if task.metric == "mlqa":
        em, f1 = metrics.mlqa_em_f1(predictions, references, lang)
    else:
        em, f1 = metrics.squad_em_f1(predictions, references)
    return {"exact_match": em, "f1": f1}


def _embed(model, sentences, tok, cfg, device, layer_fraction):
    feats = cached(featurize_sentences, sentences, tok, cfg.retrieval_max_length)
    return embed(model, feats, cfg.eval_batch_size, tok.pad_token_id, device, layer_fraction)


def _side(corpus: dict, side: str):
    """One side's sentences, keyed by the corpus they belong to (features cache)."""
    return derived(corpus[side], corpus.get("key"), {"side": side})


def evaluate_retrieval(model, task: Task, corpus: dict, tok, cfg, device, layer_fraction: float = 14 / 24,
                       threshold: float | None = None, record=None, **_) -> dict:
    """Tatoeba (metric accuracy): English queries over the non-English sentences, top-1. BUCC (metric f1):
    margin mining of the unique sentences; F1 at `threshold` (None: the F1-optimal one on this split, as on
    dev), returned with the threshold and where it came from (`trainables.retrieval`)."""
    gold = [[int(i), int(j)] for i, j in corpus["gold"]]
    if task.metric == "accuracy":  # similarity search
        src = _embed(model, _side(corpus, "sources"), tok, cfg, device, layer_fraction)
        trg = _embed(model, _side(corpus, "targets"), tok, cfg, device, layer_fraction)
        predicted = retrieval.tatoeba_predictions(src, trg, gold, device)
        _keep(record, predicted, gold)
        return {"accuracy": retrieval.tatoeba_score(predicted, gold)}
    sources, source_ids = retrieval.unique(corpus["sources"])  # metric "f1": bitext mining
    targets, target_ids = retrieval.unique(corpus["targets"])
    sources = derived(sources, corpus.get("key"), {"side": "sources", "unique": True})
    targets = derived(targets, corpus.get("key"), {"side": "targets", "unique": True})
    src = _embed(model, sources, tok, cfg, device, layer_fraction)
    trg = _embed(model, targets, tok, cfg, device, layer_fraction)
    candidates = retrieval.bucc_mine(src, trg, source_ids, target_ids, k=4, device=device)
    origin = corpus.get("origin", "test corpora")
    if threshold is None:
        threshold = retrieval.bucc_threshold(candidates, corpus["gold"])
    predicted = [list(p) for p in retrieval.bucc_predicted(candidates, threshold)]
    if corpus.get("source_ids") and corpus.get("target_ids"):  # BUCC's own sentence ids (official files): pairs of
        ids = corpus["source_ids"], corpus["target_ids"]        # ids, as `bucc_extract` writes them (one-to-one)
        predicted, gold = ([[ids[0][i], ids[1][j]] for i, j in pairs] for pairs in (predicted, gold))
    _keep(record, predicted, gold)
    return {"f1": retrieval.bucc_pairs_f1(predicted, gold), "threshold": threshold, "threshold_from": origin}
