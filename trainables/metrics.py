"""XTREME's official metrics and score. Values are percentages (0-100).

Per language (google-research/xtreme evaluate.py): accuracy (XNLI, PAWS-X, Tatoeba); seqeval F1 over tag
sequences (PAN-X *and* UDPOS — for POS this is not token accuracy); SQuAD v1.1 EM/F1 (XQuAD, TyDiQA);
MLQA's language-aware EM/F1; BUCC F1 over mined vs gold pairs. Per task: the mean over languages; QA
(span_qa) tasks score (EM + F1) / 2. `average` = the unweighted mean of the task scores present;
`xtreme` = the same, only when all nine targets are scored (evaluate.py reports `all_task` only then).
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from collections import Counter
from typing import Mapping, Sequence

import numpy as np

from trainables.tasks import CATEGORIES, TARGETS, TASKS


def accuracy(predictions: Sequence, references: Sequence) -> float:
    if len(references) == 0:
        return 0.0
    return 100.0 * float(np.mean([p == r for p, r in zip(predictions, references)]))


# ---------------------------------------------------------------- SQuAD v1.1 (official normalisation)


def squad_normalize(text: str) -> str:
    """Lower-case, drop punctuation, drop English articles, collapse whitespace (SQuAD v1.1 script)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:  # SQuAD v2 rule for empty (no-answer) strings
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _em_f1(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], normalize) -> tuple[float, float]:
    em = f1 = 0.0
    for qid, golds in references.items():
        golds = list(golds) or [""]  # unanswerable: the empty answer is right
        pred = normalize(predictions.get(qid, ""))
        em += max(float(pred == normalize(g)) for g in golds)
        f1 += max(_f1(pred.split(), normalize(g).split()) for g in golds)
    n = max(len(references), 1)
    return 100.0 * em / n, 100.0 * f1 / n


def squad_em_f1(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> tuple[float, float]:
    """(EM, F1) in percent; `predictions` id -> text, `references` id -> list of gold texts."""
    return _em_f1(predictions, references, squad_normalize)


# ---------------------------------------------------------------- MLQA (language-aware normalisation)

_PUNCT = {chr(i) for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P")} | set(string.punctuation)
_ARTICLES = {
    "en": r"\b(a|an|the)\b", "es": r"\b(un|una|unos|unas|el|la|los|las)\b", "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b", "ar": r"\sال^|ال",
}


def _mixed_segmentation(text: str) -> list[str]:
    """Chinese: every CJK character and punctuation mark is a token; the rest splits on whitespace."""
    out, pending = [], ""
    for ch in text:
        if re.search(r"[\u4e00-\u9fa5]", ch) or ch in _PUNCT:
            out.extend(pending.split())
            pending = ""
            out.append(ch)
        else:
            pending += ch
    return out + pending.split()


def mlqa_normalize(text: str, lang: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    if lang in _ARTICLES:  # hi and zh have no articles; other languages are not in MLQA (left as is)
        text = re.sub(_ARTICLES[lang], " ", text)
    tokens = _mixed_segmentation(text) if lang == "zh" else text.split()
    return " ".join(t for t in tokens if t.strip())


def mlqa_em_f1(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], lang: str) -> tuple[float, float]:
    return _em_f1(predictions, references, lambda s: mlqa_normalize(s, lang))


# ---------------------------------------------------------------- tagging


def tag_f1(predicted_tags: Sequence[Sequence[str]], gold_tags: Sequence[Sequence[str]]) -> float:
    """seqeval's F1 (default CoNLL mode) over tag sequences, as XTREME scores PAN-X *and* UDPOS: for POS each
    tag is a one-token "entity", so this is not token accuracy."""
    import warnings

    from seqeval.metrics import f1_score

    with warnings.catch_warnings():  # seqeval warns that POS tags are not BIO tags: expected here
        warnings.simplefilter("ignore", UserWarning)
        return 100.0 * float(f1_score([list(g) for g in gold_tags], [list(p) for p in predicted_tags]))


# ---------------------------------------------------------------- retrieval


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def tatoeba_accuracy(source_emb: np.ndarray, target_emb: np.ndarray, gold: Sequence[int] | None = None) -> float:
    """Top-1 cosine nearest neighbour of each source among the targets; gold[i] = right target (default i)."""
    sims = _normalise_rows(source_emb) @ _normalise_rows(target_emb).T
    gold = np.arange(len(sims)) if gold is None else np.asarray(gold)
    return 100.0 * float(np.mean(sims.argmax(axis=1) == gold))


def bucc_candidates(source_emb: np.ndarray, target_emb: np.ndarray, k: int = 4) -> list[tuple[float, int, int]]:
    """Margin-based mining (Artetxe & Schwenk): ratio margin, k neighbours, "max" retrieval.

    score(x, y) = cos(x, y) / ((mean_k cos(x, NN_k(x)) + mean_k cos(y, NN_k(y))) / 2); forward and backward
    best candidates merged, best first, each sentence used at most once.
    """
    x, y = _normalise_rows(source_emb), _normalise_rows(target_emb)
    sims = x @ y.T
    kx, ky = min(k, sims.shape[1]), min(k, sims.shape[0])
    mean_x = np.sort(sims, axis=1)[:, -kx:].mean(axis=1)
    mean_y = np.sort(sims, axis=0)[-ky:, :].mean(axis=0)
    margin = sims / ((mean_x[:, None] + mean_y[None, :]) / 2)
    fwd = [(margin[i, j], i, j) for i, j in enumerate(margin.argmax(axis=1))]
    bwd = [(margin[i, j], i, j) for j, i in enumerate(margin.argmax(axis=0))]
    used_x, used_y, out = set(), set(), []
    for score, i, j in sorted(set(fwd + bwd), key=lambda t: -t[0]):
        if i not in used_x and j not in used_y:
            used_x.add(i), used_y.add(j)
            out.append((float(score), int(i), int(j)))
    return out


def bucc_threshold(candidates: Sequence[tuple[float, int, int]], gold: Sequence[Sequence[int]]) -> float:
    """The score threshold that maximises F1 on these gold pairs (midpoint between adjacent scores)."""
    gold_set = {tuple(g) for g in gold}
    best_f1, best_t, tp = -1.0, float("inf"), 0
    ranked = sorted(candidates, key=lambda t: -t[0])
    for n, (score, i, j) in enumerate(ranked, start=1):
        tp += (i, j) in gold_set
        f1 = 2 * tp / (n + len(gold_set)) if gold_set else 0.0
        if f1 > best_f1:
            nxt = ranked[n][0] if n < len(ranked) else score - 1.0
            best_f1, best_t = f1, (score + nxt) / 2
    return best_t


def bucc_f1(candidates: Sequence[tuple[float, int, int]], gold: Sequence[Sequence[int]], threshold: float) -> float:
    """F1 (percent) of the candidates scoring >= threshold against the gold pairs."""
    predicted = {(i, j) for score, i, j in candidates if score >= threshold}
    gold_set = {tuple(g) for g in gold}
    tp = len(predicted & gold_set)
    if tp == 0:
        return 0.0
    precision, recall = tp / len(predicted), tp / len(gold_set)
    return 100.0 * 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------- the XTREME score


def primary(values: Mapping[str, float]) -> float:
    """One language's headline number: (EM + F1) / 2 for QA, else its one metric (model selection, tables)."""
    return (values["exact_match"] + values["f1"]) / 2 if "exact_match" in values else next(iter(values.values()))


def task_score(task: str, languages: Mapping[str, Mapping[str, float]]) -> float:
    """Mean over languages; QA (span_qa) tasks use (mean EM + mean F1) / 2; others their one metric."""
    if TASKS[task].kind == "span_qa":
        em = np.mean([m["exact_match"] for m in languages.values()])
        f1 = np.mean([m["f1"] for m in languages.values()])
        return float((em + f1) / 2)
    metric = TASKS[task].metric
    return float(np.mean([m[metric] for m in languages.values()]))


def xtreme_score(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict:
    """`results`: target -> language -> metric -> value. Returns {"xtreme", "average", "tasks", "categories"}.

    `average` is the unweighted mean of the task scores present ("average of k targets"); `xtreme` is that
    mean only when all nine targets are scored (XTREME's score), else None. Categories need all their tasks.
    """
    tasks = {t: task_score(t, langs) for t, langs in results.items() if langs}
    categories = {c: float(np.mean([tasks[t] for t in members])) for c, members in CATEGORIES.items()
                  if all(t in tasks for t in members)}
    average = float(np.mean(list(tasks.values()))) if tasks else None
    return {"xtreme": average if set(tasks) == set(TARGETS) else None, "average": average, "tasks": tasks,
            "categories": categories}
