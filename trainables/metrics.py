"""XTREME's official metrics and score. Values are percentages (0-100).

Per language (google-research/xtreme evaluate.py): accuracy (XNLI, PAWS-X, Tatoeba); seqeval F1 over tag
sequences (PAN-X *and* UDPOS — for POS this is not token accuracy); SQuAD v1.1 EM/F1 (XQuAD, TyDiQA);
MLQA's language-aware EM/F1; BUCC F1 over mined vs gold pairs. Per task: the mean over languages; QA
(span_qa) tasks score (EM + F1) / 2. `average` = the unweighted mean of the task scores present;
`xtreme` = the same, only when all nine targets are scored (evaluate.py reports `all_task` only then), each on
every language XTREME lists for it (evaluate.py raises FileNotFoundError for a missing one) and on whole test
sets; otherwise `missing` says what is missing and `describe` calls the number "average of k targets".
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
    """SQuAD v1.1's `f1_score` (xtreme third_party/evaluate_squad.py and evaluate_mlqa.py): 0 when nothing
    overlaps, also when both sides normalise to empty."""
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _f1_v2(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    """SQuAD v2.0's rule: an empty answer is right exactly when the gold is empty (unanswerable questions)."""
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    return _f1(pred_tokens, gold_tokens)


def _em_f1(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], normalize,
           f1=_f1) -> tuple[float, float]:
    em = total = 0.0
    for qid, golds in references.items():
        golds = list(golds) or [""]  # SQuAD v2's unanswerable questions: the empty answer is the gold
        pred = normalize(predictions.get(qid, ""))
        em += max(float(pred == normalize(g)) for g in golds)
        total += max(f1(pred.split(), normalize(g).split()) for g in golds)
    n = max(len(references), 1)
    return 100.0 * em / n, 100.0 * total / n


def squad_em_f1(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                version: str = "1.1") -> tuple[float, float]:
    """(EM, F1) in percent; `predictions` id -> text, `references` id -> list of gold texts. XTREME scores
    XQuAD and TyDiQA with the v1.1 script; the v2.0 rule for empty answers belongs to SQuAD v2 only."""
    return _em_f1(predictions, references, squad_normalize, _f1_v2 if version == "2.0" else _f1)


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


def _chunks(sequences: Sequence[Sequence[str]]) -> set[tuple[str, int, int]]:
    """seqeval 0.0.12's `get_entities` (default, prefix mode), line for line: the sentences are joined with an
    "O" between them; a tag's first character is its chunk tag (B I E S O), the part after the last "-" its
    type. Without a BIO prefix (POS tags), a run of equal tags is one chunk, and tags starting with "S"
    (SCONJ, SYM) are single-token chunks."""
    seq = [tag for sentence in sequences for tag in list(sentence) + ["O"]]
    chunks, prev_tag, prev_type, begin = set(), "O", "", 0
    for i, label in enumerate(seq + ["O"]):
        tag, type_ = label[0], label.split("-")[-1]
        end = (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
               or (prev_tag not in ("O", ".") and prev_type != type_))
        start = (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
                 or (tag not in ("O", ".") and prev_type != type_))
        if end:
            chunks.add((prev_type, begin, i - 1))
        if start:
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def tag_f1(predicted_tags: Sequence[Sequence[str]], gold_tags: Sequence[Sequence[str]]) -> float:
    """Chunk F1 as XTREME's evaluate.py computes it for PAN-X *and* UDPOS: `seqeval.metrics.f1_score(labels,
    predictions)` of seqeval 0.0.12, the version XTREME installed in 2020 and jiant pins. seqeval >= 1.0 parses
    prefix-less tags differently (CCONJ and SCONJ both become type "CONJ"), so its POS numbers differ. For POS
    this is not token accuracy."""
    true, pred = _chunks(gold_tags), _chunks(predicted_tags)
    correct = len(true & pred)
    p = correct / len(pred) if pred else 0.0
    r = correct / len(true) if true else 0.0
    return 100.0 * (2 * p * r / (p + r) if p + r > 0 else 0.0)


# ---------------------------------------------------------------- retrieval (trainables.retrieval)

from trainables.retrieval import bucc_candidates, bucc_f1, bucc_threshold, tatoeba_accuracy  # noqa: E402,F401


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


def xtreme_score(results: Mapping[str, Mapping[str, Mapping[str, float]]], max_eval_examples: int | None = None,
                 stand_ins: Mapping[str, Sequence[str]] | None = None) -> dict:
    """`results`: target -> language -> metric -> value. Returns {"xtreme", "average", "tasks", "categories",
    "missing"}.

    `average` is the unweighted mean of the task scores present ("average of k targets"); `xtreme` is that
    mean only when it is the number XTREME's evaluate.py would print: all nine targets, each on every language
    XTREME lists for it (evaluate.py raises FileNotFoundError for a missing language file), on whole test sets
    (`max_eval_examples` None), with no score resting on a stand-in (`stand_ins`: target -> languages, e.g. BUCC
    thresholds tuned on gold-only dev pairs). Else `xtreme` is None and `missing` says why: {"targets": [...],
    "languages": {target: [...]}, "max_eval_examples": n, "stand_ins": {...}} (non-empty keys only; `describe`
    makes it one line). Categories need all their tasks.
    """
    tasks = {t: task_score(t, langs) for t, langs in results.items() if langs}
    categories = {c: float(np.mean([tasks[t] for t in members])) for c, members in CATEGORIES.items()
                  if all(t in tasks for t in members)}
    average = float(np.mean(list(tasks.values()))) if tasks else None
    missing = {"targets": [t for t in TARGETS if t not in tasks],
               "languages": {t: ls for t in TARGETS if t in tasks
                             and (ls := [l for l in TASKS[t].languages if l not in results[t]])},
               "max_eval_examples": max_eval_examples,
               "stand_ins": {t: list(ls) for t, ls in (stand_ins or {}).items() if ls}}
    missing = {k: v for k, v in missing.items() if v}
    return {"xtreme": None if missing else average, "average": average, "tasks": tasks, "categories": categories,
            "missing": missing or None}


def describe(missing: Mapping | None, n_targets: int) -> str:
    """"XTREME", or "average of k targets" and why it is not XTREME, in one line."""
    if not missing:
        return "XTREME"
    why = []
    if missing.get("targets"):
        why.append(f"no {' '.join(missing['targets'])}")
    if missing.get("languages"):
        why.append("languages scored: " + ", ".join(  # which ones: `missing["languages"]` in the results JSON
            f"{t} {len(TASKS[t].languages) - len(ls)} of {len(TASKS[t].languages)}"
            for t, ls in missing["languages"].items()))
    if missing.get("max_eval_examples"):
        why.append(f"target.max_eval_examples={missing['max_eval_examples']} caps the test sets")
    if missing.get("stand_ins"):
        why.append("resting on stand-ins: " + "; ".join(f"{t} {' '.join(ls)}" for t, ls in missing["stand_ins"].items()))
    return f"average of {n_targets} targets (not XTREME: {'; '.join(why)})"
