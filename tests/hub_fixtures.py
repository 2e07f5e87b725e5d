"""Tiny rows in each Hub dataset's exact schema (shared/reference/datasets.md), written by the tests.

`write(data_dir)` lays them out as `<hub id>/<config>/<split>.<ext>` with a manifest holding en, de, ru,
so the real loader reads them exactly as it reads a prepared data_dir. `EXPECTED` says what loading must give.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

LANGS = ["en", "de", "ru"]


def _squad(i, lang="en", title=True, answer=True):
    context = f"Paris is the capital of France. Context {lang} {i}."
    row = {"id": f"{lang}-{i}", "context": context, "question": "What is the capital of France?",
           "answers": {"text": ["Paris"], "answer_start": [0]} if answer else {"text": [], "answer_start": []}}
    return {"id": row["id"], "title": "France", **row} if title else row


NLI = lambda p, h, l, **kw: {"premise": p, "hypothesis": h, "label": l, **kw}  # noqa: E731

ROWS = {
    # intermediate tasks
    "facebook/anli/plain_text/train_r1.parquet": [{"uid": "a1", "premise": "p", "hypothesis": "h", "label": 2, "reason": ""}],
    "facebook/anli/plain_text/train_r2.parquet": [{"uid": "a2", "premise": "p", "hypothesis": "h", "label": 0, "reason": "r"}],
    "facebook/anli/plain_text/train_r3.parquet": [{"uid": "a3", "premise": "p", "hypothesis": "h", "label": 1, "reason": ""}],
    "nyu-mll/glue/mnli/train.parquet": [NLI("A man sleeps.", "A person rests.", 0, idx=0),
                                        NLI("A man sleeps.", "A woman runs.", 2, idx=1)],
    "nyu-mll/glue/mnli/validation_matched.parquet": [NLI("x", "y", 1, idx=0)],
    "stanfordnlp/snli/plain_text/train.parquet": [NLI("s", "t", 1), NLI("s", "u", -1)],
    "nyu-mll/glue/qqp/train.parquet": [{"question1": "How?", "question2": "Why?", "label": 0, "idx": 0},
                                       {"question1": "How old?", "question2": "What age?", "label": 1, "idx": 1}],
    "nyu-mll/glue/qqp/validation.parquet": [{"question1": "a", "question2": "b", "label": 1, "idx": 0}],
    "rajpurkar/squad/plain_text/train.parquet": [_squad(0), _squad(1)],
    "rajpurkar/squad/plain_text/validation.parquet": [_squad(2)],
    "rajpurkar/squad_v2/squad_v2/train.parquet": [_squad(0), _squad(1, answer=False)],
    "nyu-mll/glue/sst2/train.parquet": [{"sentence": "great film", "label": 1, "idx": 0},
                                        {"sentence": "dull", "label": 0, "idx": 1}],
    "Rowan/hellaswag/default/train.parquet": [
        {"ind": 4, "activity_label": "Baking", "ctx_a": "She mixes flour.", "ctx_b": "then she",
         "ctx": "She mixes flour. then she", "endings": ["bakes it.", "swims.", "flies.", "sings."],
         "source_id": "s", "split": "train", "split_type": "indomain", "label": "0"}],
    "Rowan/hellaswag/default/validation.parquet": [
        {"ind": 5, "activity_label": "X", "ctx_a": "a", "ctx_b": "b", "ctx": "a b", "endings": ["1", "2", "3", "4"],
         "source_id": "s", "split": "val", "split_type": "zeroshot", "label": "3"},
        {"ind": 6, "activity_label": "X", "ctx_a": "a", "ctx_b": "b", "ctx": "a b", "endings": ["1", "2", "3", "4"],
         "source_id": "s", "split": "val", "split_type": "zeroshot", "label": ""}],
    "ccgbank/default/train.jsonl": [{"tokens": ["Pierre", "sleeps"], "tags": ["N/N", "S\\NP"]}],
    "allenai/cosmos_qa/default/train.csv": [
        {"id": "c1", "context": "It rained.", "question": "Why wet?", "answer0": "rain", "answer1": "sun",
         "answer2": "snow", "answer3": "none", "label": "0"}],
    "tau/commonsense_qa/default/train.parquet": [
        {"id": "q1", "question": "Where do fish live?", "question_concept": "fish",
         "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["tree", "sky", "water", "desk", "car"]},
         "answerKey": "C"}],
    # targets
    **{f"facebook/xnli/{l}/validation.parquet": [NLI(f"p-{l}", f"h-{l}", 1), NLI(f"q-{l}", f"g-{l}", 2)] for l in LANGS},
    "google-research-datasets/paws-x/en/train.parquet": [{"id": 1, "sentence1": "a b", "sentence2": "b a", "label": 0}],
    **{f"google-research-datasets/paws-x/{l}/test.parquet": [{"id": 2, "sentence1": "x", "sentence2": "y", "label": 1}]
       for l in ("en", "de")},
    "google/xtreme/udpos.English/train.parquet": [{"tokens": ["The", "dog", "barks"], "pos_tags": [5, 7, 15]}],
    **{f"google/xtreme/udpos.{n}/test.parquet": [{"tokens": ["w1", "w2"], "pos_tags": [11, 15]}]
       for n in ("English", "German", "Russian")},
    **{f"google/xtreme/udpos.{n}/validation.parquet": [{"tokens": ["v1"], "pos_tags": [7]}]
       for n in ("English", "German", "Russian")},
    **{f"google/xtreme/PAN-X.{l}/validation.parquet": [
        {"tokens": ["Angela", "Merkel", "in", "Berlin"], "ner_tags": [1, 2, 0, 5], "langs": [l] * 4}] for l in LANGS},
    **{f"google/xtreme/XQuAD.{l}/validation.parquet": [_squad(0, l, title=False)] for l in ("en", "de", "ru")},
    **{f"google/xtreme/MLQA.{l}.{l}/test.parquet": [_squad(0, l), _squad(1, l)] for l in ("en", "de")},
    "google/xtreme/tydiqa/train.parquet": [{**_squad(0), "id": "english-1"}, {**_squad(1), "id": "russian-2"}],
    "google/xtreme/tydiqa/validation.parquet": [{**_squad(2), "id": "english-3"}, {**_squad(3), "id": "russian-4"},
                                                {**_squad(4), "id": "russian-5"}],
    # BUCC dev: de from the official sample-corpus layout; ru only from google/xtreme's gold pairs (fallback)
    **{f"bucc2018/de-en/de-en.sample.{ext}": lines for ext, lines in (
        ("de", ["de-000000001\tEins", "de-000000002\tZwei", "de-000000003\tDrei"]),
        ("en", ["en-000000001\tone", "en-000000002\ttwo", "en-000000003\tfour"]),
        ("gold", ["de-000000001\ten-000000001", "de-000000002\ten-000000002"]))},
    **{f"google/xtreme/bucc18.{l}/validation.parquet": [
        {"source_sentence": f"{l} eins", "target_sentence": "one", "source_lang": f"{l}-000000001", "target_lang": "en-000000007"},
        {"source_sentence": f"{l} zwei", "target_sentence": "two", "source_lang": f"{l}-000000002", "target_lang": "en-000000009"}]
       for l in ("de", "ru")},
    **{f"mteb/BUCC/{l}-en/test.parquet": [
        {"sentence1": [f"{l} a", f"{l} b", f"{l} c"], "sentence2": ["x", "y", "z", "w"], "gold": [[1, 2], [3, 4]]}]
       for l in ("de", "ru")},
    **{f"google/xtreme/tatoeba.{c}/validation.parquet": [
        {"source_sentence": f"{c} one\n", "target_sentence": "one\n", "source_lang": c, "target_lang": "eng"},
        {"source_sentence": f"{c} two\n", "target_sentence": "two\n", "source_lang": c, "target_lang": "eng"}]
       for c in ("deu", "rus")},
}

# task -> split -> lang -> (count, first example's key facts)
EXPECTED = {
    "anli_plus": {"train": {"en": 6}},  # 3 ANLI + 2 MNLI + 1 SNLI (its -1 row dropped)
    "mnli": {"train": {"en": 2}, "validation": {"en": 1}},
    "qqp": {"train": {"en": 2}, "validation": {"en": 1}},
    "squad_v1": {"train": {"en": 2}, "validation": {"en": 1}},
    "squad_v2": {"train": {"en": 2}},
    "sst2": {"train": {"en": 2}},
    "hellaswag": {"train": {"en": 1}, "validation": {"en": 1}},  # "" label (unlabelled) dropped
    "ccg": {"train": {"en": 1}},
    "cosmosqa": {"train": {"en": 1}},
    "commonsenseqa": {"train": {"en": 1}},
    "xnli": {"train": {"en": 2}, "validation": {"en": 2, "de": 2, "ru": 2}},
    "pawsx": {"train": {"en": 1}, "test": {"en": 1, "de": 1}},
    "udpos": {"train": {"en": 1}, "validation": {"en": 1, "de": 1, "ru": 1}, "test": {"en": 1, "de": 1, "ru": 1}},
    "panx": {"validation": {"en": 1, "de": 1, "ru": 1}},
    "xquad": {"train": {"en": 2}, "test": {"en": 1, "de": 1, "ru": 1}},  # its one split is XTREME's test
    "mlqa": {"train": {"en": 2}, "test": {"en": 2, "de": 2}},
    "tydiqa": {"train": {"en": 1}, "test": {"en": 1, "ru": 2}},  # GoldP dev = XTREME's test
    "bucc2018": {"validation": {"de": 2, "ru": 2}, "test": {"de": 2, "ru": 2}},
    "tatoeba": {"test": {"de": 2, "ru": 2}},
}


def write(data_dir: Path, rows: dict | None = None, languages: list[str] = LANGS) -> Path:
    """Write `rows` (default: ROWS) into data_dir in the local layout, plus a manifest of `languages`."""
    for rel, items in (ROWS if rows is None else rows).items():
        path = Path(data_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".parquet":
            pq.write_table(pa.Table.from_pylist(items), path)
        elif path.suffix == ".jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in items))
        elif path.parent.parent.name == "bucc2018":  # raw BUCC release files: one line each
            path.write_text("".join(line + "\n" for line in items))
        else:
            with path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(items[0]))
                writer.writeheader()
                writer.writerows(items)
    (Path(data_dir) / "xstilts.json").write_text(json.dumps({"languages": languages}))
    return Path(data_dir)


def hub_rows(task_names) -> dict[str, list[dict]]:
    """Rows keyed like ROWS for every Hub source split `trainables.data.prepare(task_names)` reads (targets: every
    language and their training task's English train): ROWS' own where it has them, else a copy of the rows of
    another config of the same source (same schema; its first text column tagged `[<config>/<split>]`, so no two
    files are alike), so a stand-in Hub can serve whole repos."""
    import re

    from trainables.data import SPLITS, plan
    from trainables.tasks import get_task, training_task

    out = {}
    tasks = [get_task(n) for n in task_names]
    for task in tasks + [training_task(t) for t in tasks if t.train_on]:
        for split in SPLITS:
            for read in plan(task, split, ["en"] if split == "train" else list(task.languages_for(split))):
                source = read.source
                if source.local_only or source.raw or source.files:
                    continue
                key = f"{source.hub_id}/{read.config}/{read.hub_split}.parquet"
                if key in ROWS:
                    out[key] = ROWS[key]
                    continue
                pattern = re.escape(source.config)
                for field in ("lang", "udpos", "iso3"):
                    pattern = pattern.replace(re.escape("{" + field + "}"), "[^/]+")
                same = [k for k in ROWS if re.fullmatch(f"{re.escape(source.hub_id)}/{pattern}/[^/]+\\.parquet", k)]
                same.sort(key=lambda k: not k.endswith(f"/{read.hub_split}.parquet"))  # the same split first
                if not same:
                    raise KeyError(f"no fixture rows of {source.hub_id}/{source.config} to copy for {key}")
                rows = [dict(r) for r in ROWS[same[0]]]
                text = next((c for c in source.columns if isinstance(rows[0].get(c), str)), None)
                for row in rows:
                    if text:
                        row[text] = f"{row[text]} [{read.config}/{read.hub_split}]"
                out[key] = rows
    return out
