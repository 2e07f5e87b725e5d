"""Readers: one Hub row format -> normalised examples of the task's kind (the shapes `trainables.data` lists).

The task table names a reader per source (`Source.reader`); labels are mapped from whatever the Hub stores
(ClassLabel ints, "1", "A", "entailment") to indices, and unlabelled rows (SNLI's -1) are dropped.
Retrieval readers give one corpus per language: `{"sources", "targets", "gold": [[i, j], ...]}` with 0-based
indices into the two sentence lists (sources: the non-English side, targets: English).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from trainables.errors import XstiltsError
from trainables.tasks import Task


def _label(task: Task, value) -> int | None:
    """Map a Hub label (ClassLabel int, or a string such as "1", "A", "entailment") to an index; None = unlabelled."""
    if value is None or value == "" or value == -1 or value == "-1":
        return None
    names = task.labels or ()
    if isinstance(value, str):
        if value in names:
            return names.index(value)
        if value.lstrip("-").isdigit():
            value = int(value)
        else:
            raise XstiltsError(f"{task.name}: unknown label {value!r} — labels are {list(names)}")
    if not 0 <= int(value) < len(names):
        raise XstiltsError(f"{task.name}: label {value} out of range for {len(names)} labels")
    return int(value)


def _pair(task: Task, rows: list[dict]) -> list[dict]:
    f = task.text_fields
    out = []
    for row in rows:
        label = _label(task, row[f["label"]])
        if label is None:  # SNLI's -1 (no gold label), GLUE's hidden test labels
            continue
        ex = {"text_a": row[f["text_a"]], "label": label}
        if "text_b" in f:
            ex["text_b"] = row[f["text_b"]]
        out.append(ex)
    return out


def _squad(task: Task, rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        answers = row["answers"] or {"text": [], "answer_start": []}
        out.append({"id": str(row["id"]), "context": row["context"], "question": row["question"],
                    "answers": {"text": list(answers["text"]), "answer_start": [int(a) for a in answers["answer_start"]]}})
    return out


def _tagging(task: Task, rows: list[dict]) -> list[dict]:
    column = task.text_fields["tags"]
    names = task.labels
    out = []
    for row in rows:
        if names and any(isinstance(t, int) and not 0 <= t < len(names) for t in row[column]):
            bad = next(t for t in row[column] if isinstance(t, int) and not 0 <= t < len(names))
            raise XstiltsError(f"{task.name}: tag {bad} out of range for {len(names)} tags")
        tags = [names[t] if isinstance(t, int) and names else str(t) for t in row[column]]
        out.append({"tokens": list(row["tokens"]), "tags": tags})
    return out


def _hellaswag(task: Task, rows: list[dict]) -> list[dict]:
    # jiant's recipe: prompt = ctx_a, choice = ctx_b + " " + ending.
    return [{"context": r["ctx_a"], "choices": [f"{r['ctx_b']} {e}".strip() for e in r["endings"]],
             "label": label} for r in rows if (label := _label(task, r["label"])) is not None]


def _cosmosqa(task: Task, rows: list[dict]) -> list[dict]:
    return [{"context": f"{r['context']} {r['question']}", "choices": [r[f"answer{i}"] for i in range(4)],
             "label": label} for r in rows if (label := _label(task, r["label"])) is not None]


def _commonsenseqa(task: Task, rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        label = _label(task, r["answerKey"])
        if label is None:
            continue
        keys = list(r["choices"]["label"])
        out.append({"context": r["question"], "choices": list(r["choices"]["text"]),
                    "label": keys.index(task.labels[label])})
    return out


def _tatoeba(task: Task, rows: list[dict]) -> list[dict]:
    # google/xtreme kept Tatoeba's trailing newlines; row i of each side is a translation pair.
    sources = [r["source_sentence"].strip() for r in rows]
    targets = [r["target_sentence"].strip() for r in rows]
    return [{"sources": sources, "targets": targets, "gold": [[i, i] for i in range(len(rows))]}] if rows else []


def _bucc_pairs(task: Task, rows: list[dict]) -> list[dict]:
    # google/xtreme bucc18: gold pairs only (a stand-in dev set: mining among gold pairs is trivial, so a
    # threshold tuned here is miscalibrated); source_lang/target_lang actually hold the sentence ids.
    src_ids, trg_ids, sources, targets, gold = {}, {}, [], [], []
    for r in rows:
        i = src_ids.setdefault(r["source_lang"], len(sources))
        if i == len(sources):
            sources.append(r["source_sentence"].strip())
        j = trg_ids.setdefault(r["target_lang"], len(targets))
        if j == len(targets):
            targets.append(r["target_sentence"].strip())
        gold.append([i, j])
    return [{"sources": sources, "targets": targets, "gold": gold, "origin": "gold-only dev"}] if rows else []


def _bucc_corpus(task: Task, rows: list[dict]) -> list[dict]:
    # mteb/BUCC: one row per language pair with the full corpora; gold indices are 1-based.
    return [{"sources": [s.strip() for s in r["sentence1"]], "targets": [s.strip() for s in r["sentence2"]],
             "gold": [[int(i) - 1, int(j) - 1] for i, j in r["gold"]], "origin": "mteb/BUCC"} for r in rows]


def without_distractors(corpus: dict) -> str | None:
    """Which side of a mining corpus holds nothing but gold-aligned sentences ("sources": the non-English side,
    "targets": English), or None when both sides have distractors, as BUCC's corpora do (de-en training: 9,580
    gold pairs among ~414k x ~400k sentences). Mining among gold-aligned sentences is another, easier task."""
    for side, column in (("sources", 0), ("targets", 1)):
        aligned = {corpus[side][pair[column]] for pair in corpus["gold"]}
        if not set(corpus[side]) - aligned:
            return side
    return None


def raw_bucc_files(folder: Path, config: str, split: str) -> tuple[Path, Path, Path]:
    """The official BUCC 2018 release layout: `<xx>-en/<xx>-en.<split>.{xx,en,gold}` (split: sample, training)."""
    xx = config.split("-")[0]
    return tuple(folder / f"{config}.{split}.{ext}" for ext in (xx, "en", "gold"))  # type: ignore[return-value]


def read_bucc_raw(folder: Path, config: str, split: str) -> list[dict]:
    """One row of a raw BUCC corpus: `ID<TAB>sentence` lines per side, `xx-ID<TAB>en-ID` gold lines."""
    def lines(path: Path) -> list[list[str]]:
        with path.open(encoding="utf-8", errors="surrogateescape") as fh:
            return [line.rstrip("\n").split("\t", 1) for line in fh if line.strip()]

    src, trg, gold = (lines(p) for p in raw_bucc_files(folder, config, split))
    for path, rows in zip(raw_bucc_files(folder, config, split), (src, trg, gold)):
        if any(len(r) != 2 for r in rows):
            raise XstiltsError(f"malformed {path}: every line must be two tab-separated fields — re-extract the "
                               f"official bucc2018-{config}.{split}-gold.tar.bz2")
    return [{"ids1": [r[0] for r in src], "sentences1": [r[1] for r in src], "ids2": [r[0] for r in trg],
             "sentences2": [r[1] for r in trg], "gold": gold, "split": split}]


def _bucc_raw(task: Task, rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        src = {sid: i for i, sid in enumerate(r["ids1"])}
        trg = {tid: j for j, tid in enumerate(r["ids2"])}
        gold = [[src[s], trg[t]] for s, t in r["gold"] if s in src and t in trg]
        out.append({"sources": [x.strip() for x in r["sentences1"]], "targets": [x.strip() for x in r["sentences2"]],
                    "gold": gold, "origin": f"{r.get('split', 'sample')} corpora",  # sample (dev) / training (test)
                    "source_ids": list(r["ids1"]), "target_ids": list(r["ids2"])})  # for predictions files
    return out


READERS: dict[str, Callable[[Task, list[dict]], list[dict]]] = {
    "pair": _pair, "single": _pair, "squad": _squad, "tagging": _tagging, "hellaswag": _hellaswag,
    "cosmosqa": _cosmosqa, "commonsenseqa": _commonsenseqa, "tatoeba": _tatoeba,
    "bucc_pairs": _bucc_pairs, "bucc_corpus": _bucc_corpus, "bucc_raw": _bucc_raw,
}
