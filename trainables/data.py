"""The data layer: read every task from a local data_dir or the Hub, and normalise it per kind.

A source is read from `<data_dir>/<hub_id>/<config>/<split>.{parquet,jsonl,csv}` when that file exists
(columns exactly as on the Hub), else from the Hub with `datasets` 5.x. Both paths yield the same rows,
so one set of readers (`READERS`) normalises them into examples of the task's kind:

  classification / pair_classification  {"text_a", "text_b"?, "label": int}
  multiple_choice                       {"context", "choices": [str], "label": int}
  span_qa                               {"id", "context", "question", "answers": {"text", "answer_start"}}
  tagging                               {"tokens": [str], "tags": [str]}       (tag *names*, not ids)
  retrieval                             {"sources": [str], "targets": [str], "gold": [[i, j]]}  (one per language)

Inspect:  xstilts data inspect xnli --data-dir toy_data --json
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

from trainables.errors import XstiltsError
from trainables.tasks import TYDIQA_PREFIXES, Source, Task, get_task, training_task

SPLITS = ("train", "validation", "test")
SUFFIXES = (".parquet", ".jsonl", ".csv")
MANIFEST = "xstilts.json"  # a data_dir that holds only some languages lists them here


# ---------------------------------------------------------------- reading one source split


def local_path(data_dir: Path | None, hub_id: str, config: str, split: str) -> Path | None:
    if data_dir is None:
        return None
    for suffix in SUFFIXES:
        path = Path(data_dir) / hub_id / config / f"{split}{suffix}"
        if path.exists():
            return path
    return None


def read_local(path: Path) -> list[dict]:
    """Rows of one local file, as dicts with the Hub's columns."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as fh:
                return [json.loads(line) for line in fh if line.strip()]
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    except Exception as exc:  # pyarrow/json errors are long; keep the user's line short
        raise XstiltsError(f"cannot read {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                           f"delete it and re-run `xstilts data prepare`") from exc


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def hub_load(source: Source, config: str, split: str) -> Iterable[dict]:
    """Load one split from the Hub with datasets 5.x (no loading scripts)."""
    from datasets import load_dataset

    if source.files:  # raw files (Cosmos QA): the csv/json builders, no script
        url = source.files[split]
        builder = "csv" if url.endswith(".csv") else "json"
        return load_dataset(builder, data_files={split: url}, split=split)
    if source.revision == "refs/convert/parquet":  # the viewer's export: <config>/<split>/*.parquet
        return load_dataset(source.hub_id, data_dir=config, revision=source.revision, split=split)
    return load_dataset(source.hub_id, config, split=split, revision=source.revision)


def read_split(task: Task, source: Source, config: str, split: str, data_dir: Path | None,
               loader: Callable[[Source, str, str], Iterable[dict]] = hub_load) -> list[dict]:
    """Rows of one Hub split of one source: local file first, else the Hub; columns checked."""
    path = local_path(data_dir, source.hub_id, config, split)
    if path is not None:
        rows = read_local(path)
        where = str(path)
    elif source.local_only:
        raise XstiltsError(f"{task.name}: no local files under {data_dir}. {source.local_only}")
    elif offline() or loader is None:
        raise XstiltsError(
            f"{task.name}: missing source offline: {source.hub_id}/{config}/{split} is not under "
            f"{data_dir or '(no --data-dir)'}; run `xstilts data prepare {task.name} --data-dir DIR` "
            f"where the Hub is reachable, or unset HF_DATASETS_OFFLINE/HF_HUB_OFFLINE")
    else:
        try:
            rows = [dict(r) for r in loader(source, config, split)]  # dict(): datasets 5 yields LazyRow
        except XstiltsError:
            raise
        except Exception as exc:
            raise XstiltsError(f"{task.name}: cannot load {source.hub_id}/{config} split {split} from the Hub "
                               f"({type(exc).__name__}); prepare it offline with `xstilts data prepare`") from exc
        where = f"{source.hub_id}/{config}:{split}"
    if rows:
        missing = [c for c in source.columns if c not in rows[0]]
        if missing:
            raise XstiltsError(f"{task.name}: wrong columns in {where}: missing {missing}; "
                               f"expected the Hub schema {list(source.columns)}")
    return rows


# ---------------------------------------------------------------- normalisation per reader


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
            raise XstiltsError(f"{task.name}: unknown label {value!r}; labels are {list(names)}")
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
    # google/xtreme bucc18: gold pairs only; source_lang/target_lang actually hold the sentence ids.
    src_ids, trg_ids, sources, targets, gold = {}, {}, [], [], []
    for r in rows:
        i = src_ids.setdefault(r["source_lang"], len(sources))
        if i == len(sources):
            sources.append(r["source_sentence"].strip())
        j = trg_ids.setdefault(r["target_lang"], len(targets))
        if j == len(targets):
            targets.append(r["target_sentence"].strip())
        gold.append([i, j])
    return [{"sources": sources, "targets": targets, "gold": gold}] if rows else []


def _bucc_corpus(task: Task, rows: list[dict]) -> list[dict]:
    # mteb/BUCC: one row per language pair with the full corpora; gold indices are 1-based.
    return [{"sources": [s.strip() for s in r["sentence1"]], "targets": [s.strip() for s in r["sentence2"]],
             "gold": [[int(i) - 1, int(j) - 1] for i, j in r["gold"]]} for r in rows]


READERS: dict[str, Callable[[Task, list[dict]], list[dict]]] = {
    "pair": _pair, "single": _pair, "squad": _squad, "tagging": _tagging, "hellaswag": _hellaswag,
    "cosmosqa": _cosmosqa, "commonsenseqa": _commonsenseqa, "tatoeba": _tatoeba,
    "bucc_pairs": _bucc_pairs, "bucc_corpus": _bucc_corpus,
}


# ---------------------------------------------------------------- tasks, splits, languages


def manifest_languages(data_dir: Path | None) -> set[str] | None:
    """Languages a partial data_dir holds (its manifest), or None when it holds every language."""
    if data_dir is None or not (Path(data_dir) / MANIFEST).exists():
        return None
    try:
        return set(json.loads((Path(data_dir) / MANIFEST).read_text())["languages"])
    except (ValueError, KeyError) as exc:
        raise XstiltsError(f"malformed {Path(data_dir) / MANIFEST}: expected {{\"languages\": [...]}}") from exc


def task_languages(task: Task, data_dir: Path | None) -> list[str]:
    """The task's XTREME languages that this data_dir holds (all of them without a manifest)."""
    held = manifest_languages(data_dir)
    return [lang for lang in task.languages if held is None or lang in held]


def load_split(task: Task | str, split: str, data_dir: Path | str | None = None,
               languages: Sequence[str] | None = None, loader=hub_load) -> dict[str, list[dict]]:
    """Normalised examples of one split, by language: `{lang: [example, ...]}`.

    `train` is always the English training set (a target's comes from `train_on`: XNLI reads MNLI);
    evaluation splits cover the task's languages that the data_dir holds. Missing splits give `{}`.
    """
    task = get_task(task) if isinstance(task, str) else task
    if split not in SPLITS:
        raise XstiltsError(f"unknown split {split!r}; splits are {SPLITS}")
    data_dir = Path(data_dir) if data_dir is not None else None
    if split == "train":
        task = training_task(task)
        langs = ["en"]
    else:
        langs = list(languages) if languages is not None else task_languages(task, data_dir)
    out: dict[str, list[dict]] = {}
    for source in task.sources:
        for hub_split in source.splits.get(split, ()):
            for lang, examples in _read_languages(task, source, hub_split, langs, data_dir, loader).items():
                out.setdefault(lang, []).extend(examples)
    return out


def _read_languages(task: Task, source: Source, hub_split: str, langs: list[str], data_dir, loader):
    read = READERS[source.reader]
    if source.per_language:
        return {lang: read(task, read_split(task, source, source.config_for(lang), hub_split, data_dir, loader))
                for lang in langs}
    rows = read_split(task, source, source.config, hub_split, data_dir, loader)
    if source.lang_from_id:  # TyDiQA: one config, language = id prefix
        by_lang: dict[str, list[dict]] = {}
        for row in rows:
            lang = TYDIQA_PREFIXES.get(str(row["id"]).split("-")[0])
            if lang in langs:
                by_lang.setdefault(lang, []).append(row)
        return {lang: read(task, rs) for lang, rs in by_lang.items()}
    return {"en": read(task, rows)} if "en" in langs else {}


def inputs(task: Task | str, split: str, data_dir: Path | str | None = None) -> list[list]:
    """What `load_split(task, split, data_dir)` reads, for cache keys: `["file", path under data_dir, content
    hash]` for each local file and `["hub", id, config, split, revision]` for each Hub source."""
    from trainables.cache import file_digest

    task = get_task(task) if isinstance(task, str) else task
    data_dir = Path(data_dir) if data_dir is not None else None
    if split == "train":
        task, langs = training_task(task), ["en"]
    else:
        langs = task_languages(task, data_dir)
    out: list[list] = []
    for source in task.sources:
        configs = [source.config_for(l) for l in langs] if source.per_language else [source.config]
        for config in dict.fromkeys(configs):
            for hub_split in source.splits.get(split, ()):
                path = local_path(data_dir, source.hub_id, config, hub_split)
                if path is not None:
                    out.append(["file", str(path.relative_to(data_dir)), file_digest(path)])
                else:
                    out.append(["hub", source.hub_id, config, hub_split, source.revision])
    return out


def count(task: Task, examples: list[dict]) -> int:
    """Examples in a list; for retrieval, the gold pairs."""
    if task.kind == "retrieval":
        return sum(len(e["gold"]) for e in examples)
    return len(examples)


def inspect(task_name: str, data_dir: Path | str | None) -> dict:
    """`{"task", "splits": {split: {lang: count}}}` after loading and normalisation."""
    task = get_task(task_name)
    splits = {}
    for split in SPLITS:
        by_lang = load_split(task, split, data_dir)
        if by_lang:
            splits[split] = {lang: count(task, exs) for lang, exs in by_lang.items()}
    return {"task": task.name, "splits": splits}


def tag_labels(task: Task, train_examples: Sequence[dict]) -> tuple[str, ...]:
    """Tag names of a tagging task: the table's, or (CCG) sorted from its training examples."""
    return task.labels or tuple(sorted({t for ex in train_examples for t in ex["tags"]}))


def prepare(task_names: Sequence[str], data_dir: Path | str, loader=hub_load) -> list[Path]:
    """Download every source split the tasks need into the local layout (for offline clusters)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data_dir = Path(data_dir)
    written = []
    tasks = [get_task(n) for n in task_names]
    for task in tasks + [training_task(t) for t in tasks if t.train_on and t.train_on != t.name]:
        for source in task.sources:
            if source.local_only:
                continue
            for split, hub_splits in source.splits.items():
                langs = ["en"] if split == "train" else list(task.languages)
                configs = [source.config_for(l) for l in langs] if source.per_language else [source.config]
                for config in dict.fromkeys(configs):
                    for hub_split in hub_splits:
                        path = data_dir / source.hub_id / config / f"{hub_split}.parquet"
                        if path.exists():
                            continue
                        rows = [dict(r) for r in loader(source, config, hub_split)]
                        path.parent.mkdir(parents=True, exist_ok=True)
                        tmp = path.with_suffix(".parquet.tmp")
                        pq.write_table(pa.Table.from_pylist(rows), tmp)
                        tmp.rename(path)  # atomic: a crash never leaves a half-written split
                        written.append(path)
    return written
