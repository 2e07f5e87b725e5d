"""Test predictions and labels in XTREME's submission layout, as google-research/xtreme's `evaluate.py` reads them.

  xstilts run toy --predictions sub                    one pipeline, then its test predictions
  xstilts export toy [--trial N] --predictions sub     a search trial's (phase 3 re-run for its encoder; cache hits)
  python evaluate.py --prediction_folder sub/predictions --label_folder sub/labels     (in a clone of xtreme)

writes, for every target and language scored on test,
  DIR/predictions/<task>/test-<lang>.<tsv|json>   what the model predicted (XTREME's README, "Submissions")
  DIR/labels/<task>/test-<lang>.<tsv|json>        the gold it was scored against, in the label files' format
  DIR/predictions.zip                             the task folders of DIR/predictions, for an upload
Task names are XTREME's (pawsx xnli udpos panx xquad mlqa tydiqa bucc2018 tatoeba); the extension is `json`
for QA and `tsv` otherwise (evaluate.py `get_suffix`). Formats, per evaluate.py's `READER_FUNCTION`:
  pawsx, xnli   one label per line as XTREME's run_classify.py writes it (`label_list[p]`): XNLI's
                entailment / neutral / contradiction, PAWS-X's 0 / 1 (`read_label`)
  udpos, panx   one tag per line, a blank line between sentences (run_tag.py's `save_predictions`; `read_tag`)
  xquad, mlqa,  predictions {question id: answer text}; labels SQuAD v1.1 JSON {"data": [{"paragraphs":
  tydiqa        [{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}],
                "version": "1.1"} (`read_squad`; third_party/evaluate_squad.py, evaluate_mlqa.py). JSON is
                written ASCII-escaped: evaluate.py opens files with the locale's encoding
  tatoeba       one index per line: for each English query, the 0-based line of the nearest sentence of the
                other language (evaluate_retrieval.py's `similarity_search` output; `read_label`)
  bucc2018      one mined pair per line, `<src id>\\t<trg id>` (utils_retrieve.py's `bucc_extract`), sorted; labels
                the gold pairs. Ids are BUCC's own (`de-000413461`) when the test corpora were read from the official
                files; mteb/BUCC's copy has none, so there they are the sentences' 1-based positions (mteb's gold
                numbering) in BUCC's shape, `de-000000042` / `en-000000007`
The predictions are the ones the pipeline scored: each evaluator hands back the lists its metric was computed
from (`trainables.evaluate`, `record=`), phase 3 stores them in the target's cache entry (`PREDICTIONS`) beside its
metrics, and this module only formats them. Re-scoring these files with evaluate.py's readers gives the results
JSON's per-language numbers (tests/test_predictions.py). With `target.max_eval_examples` set, files cover only
the evaluated examples — not a valid leaderboard submission. Each task's folders are replaced whole; other tasks'
folders in DIR are kept, so runs of different targets can fill one submission folder.
"""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from pathlib import Path
from typing import Mapping

from trainables.tasks import TASKS

PREDICTIONS = "predictions.json.gz"  # in a phase-3 cache entry: {lang: {"predicted", "gold"}} of the test split


def save_records(path: Path, records: Mapping[str, dict]) -> None:
    """A target's test records (language -> {"predicted", "gold"}) as gzipped JSON."""
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(records, fh, default=_plain)


def load_records(path: Path) -> dict[str, dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def _plain(value):
    """numpy scalars (labels read from parquet) as Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def suffix(task: str) -> str:
    """evaluate.py `get_suffix`: json for the QA group, tsv for the rest."""
    return "json" if TASKS[task].kind == "span_qa" else "tsv"


def _lines(items) -> str:
    return "".join(f"{item}\n" for item in items)


def tag_lines(sentences) -> str:
    """One tag per line, a blank line between sentences (no blank line after the last), as run_tag.py writes and
    `read_tag` reads: an empty sentence inside the file survives as two blank lines."""
    return "\n".join(_lines(s) for s in sentences)


def squad_json(gold: list[dict], title: str) -> dict:
    """SQuAD v1.1 JSON of the gold questions; consecutive questions on one context share a paragraph."""
    paragraphs: list[dict] = []
    for q in gold:
        qa = {"id": q["id"], "question": q["question"],
              "answers": [{"text": t, "answer_start": s} for t, s in zip(q["answers"]["text"],
                                                                       q["answers"]["answer_start"])]}
        if paragraphs and paragraphs[-1]["context"] == q["context"]:
            paragraphs[-1]["qas"].append(qa)
        else:
            paragraphs.append({"context": q["context"], "qas": [qa]})
    return {"data": [{"title": title, "paragraphs": paragraphs}], "version": "1.1"}


def bucc_id(side: str, index: int) -> str:
    """A sentence id in BUCC's shape (`de-000000042`) from its 0-based position in the corpus."""
    return f"{side}-{index + 1:09d}"


def render(task: str, lang: str, record: dict) -> tuple[str, str]:
    """(prediction file text, label file text) of one language's record."""
    t = TASKS[task]
    if t.role != "target":
        raise ValueError(f"task {task} is not an XTREME target: it has no submission format")
    predicted, gold = record["predicted"], record["gold"]
    if t.kind in ("classification", "pair_classification"):
        return _lines(t.labels[p] for p in predicted), _lines(t.labels[g] for g in gold)
    if t.kind == "tagging":
        return tag_lines(predicted), tag_lines(gold)
    if t.kind == "span_qa":
        return (json.dumps(predicted, indent=1) + "\n",
                json.dumps(squad_json(gold, f"{task}-{lang}"), indent=1) + "\n")
    if t.kind == "retrieval" and t.metric == "accuracy":  # Tatoeba
        return _lines(int(p) for p in predicted), _lines(int(i) for i, _ in gold)
    if t.kind == "retrieval":  # BUCC: the corpus's own ids where it had them, else ids from positions
        ids = lambda ps: sorted({(i, j) if isinstance(i, str) else (bucc_id(lang, int(i)), bucc_id("en", int(j)))
                                 for i, j in ps})
        return _lines(f"{i}\t{j}" for i, j in ids(predicted)), _lines(f"{i}\t{j}" for i, j in ids(gold))
    raise ValueError(f"task {task} ({t.kind}) has no XTREME submission format")


def write_submission(out: Path, records: Mapping[str, Mapping[str, dict]], zip_file: bool = True) -> list[Path]:
    """Write `records` (task -> language -> {"predicted", "gold"}) under `out` (module docstring); returns the files
    written. Each task's `predictions/<task>` and `labels/<task>` folders are written aside and then replace the old
    ones, so a folder never mixes two runs; other tasks' folders are kept."""
    out = Path(out)
    written: list[Path] = []
    for task, langs in records.items():
        folders = [out / kind / task for kind in ("predictions", "labels")]
        tmps = [folder.with_name(f".{task}.tmp") for folder in folders]
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        for lang, record in sorted(langs.items()):
            for tmp, text in zip(tmps, render(task, lang, record)):
                (tmp / f"test-{lang}.{suffix(task)}").write_text(text, encoding="utf-8")
        for folder, tmp in zip(folders, tmps):
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
            written += sorted(folder.iterdir())
    if zip_file and (out / "predictions").is_dir():
        tmp = out / ".predictions.zip.tmp"
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted((out / "predictions").rglob("*")):
                if path.is_file() and not any(p.startswith(".") for p in path.relative_to(out).parts):
                    zf.write(path, path.relative_to(out / "predictions").as_posix())
        tmp.replace(out / "predictions.zip")
        written.append(out / "predictions.zip")
    return written
