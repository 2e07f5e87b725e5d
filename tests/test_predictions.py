"""Test predictions in XTREME's submission layout (`trainables.predictions`), read back as the official scorer reads
them and scored with the project's own metrics: the per-language numbers must be the results JSON's.

Official lines followed (google-research/xtreme, commit 838c13b): `evaluate.py` — `read_tag`, `read_label`,
`read_squad` (copied below), `READER_FUNCTION`, `get_suffix`, `evaluate()`'s paths
`<folder>/<task>/test-<lang>.<suffix>`, `bucc_f1` (pairs as `tuple(line.split('\\t'))`); README.md "Leaderboard
Submission"; `mock_test_data/{predictions,labels}/` for the file shapes (XNLI label strings, POS tags with a
blank line between sentences, Tatoeba indices, BUCC `de-000413461\\ten-000091985` lines, SQuAD v1.1 label JSON).

Fast layer: each writer's format, and the cache's refusal of entries without predictions. Slow layer (a tiny toy
model, ~30 s; the export test runs a two-trial search, ~2 min): `xstilts run --predictions` and
`xstilts export --predictions`.  Run: pytest tests/test_predictions.py
"""

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from trainables import metrics, retrieval
from trainables.predictions import PREDICTIONS, render, squad_json, suffix, write_submission
from trainables.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------ xtreme evaluate.py's readers, line for line


def read_tag(file):
    """Read labels of NER and POS data. (xtreme evaluate.py `read_tag`)"""
    labels = []
    example = []
    with open(file, 'r') as f:
        for line in f:
            line = line.strip()
            if line:
                example.append(line)
            else:
                labels.append(example)
                example = []
    if example:
        labels.append(example)
    return labels


def read_label(file):
    """xtreme evaluate.py `read_label`."""
    with open(file, 'r') as f:
        return [l.strip() for l in f]


def read_squad(file):
    """Read QA data. (xtreme evaluate.py `read_squad`)"""
    with open(file) as dataset_file:
        dataset_json = json.load(dataset_file)
        if 'data' in dataset_json:
            return dataset_json['data']
        else:
            return dataset_json


READER_FUNCTION = {'pawsx': read_label, 'xnli': read_label, 'panx': read_tag, 'udpos': read_tag,
                   'bucc2018': read_label, 'tatoeba': read_label, 'xquad': read_squad, 'mlqa': read_squad,
                   'tydiqa': read_squad}  # evaluate.py `READER_FUNCTION` (XTREME's nine tasks)


def squad_references(dataset) -> dict:
    """question id -> gold answer texts, walking articles/paragraphs/qas as third_party/evaluate_squad.py does."""
    return {qa['id']: [a['text'] for a in qa['answers']]
            for article in dataset for paragraph in article['paragraphs'] for qa in paragraph['qas']}


def score_files(task: str, lang: str, prediction_file: Path, label_file: Path) -> dict:
    """One language's metrics from the files (evaluate.py `evaluate_one_task`), with xstilts' metric functions."""
    predictions, labels = READER_FUNCTION[task](prediction_file), READER_FUNCTION[task](label_file)
    if task not in ('bucc2018', 'mlqa', 'tydiqa', 'xquad'):
        assert len(predictions) == len(labels)
    if task in ('xnli', 'pawsx', 'tatoeba'):
        return {"accuracy": metrics.accuracy(predictions, labels)}
    if task in ('udpos', 'panx'):
        return {"f1": metrics.tag_f1(predictions, labels)}
    if task == 'bucc2018':  # evaluate.py bucc_f1: sets of tuple(line.split('\t'))
        return {"f1": retrieval.bucc_pairs_f1([tuple(l.split('\t')) for l in predictions],
                                               [tuple(l.split('\t')) for l in labels])}
    references = squad_references(labels)
    em, f1 = (metrics.mlqa_em_f1(predictions, references, lang) if task == 'mlqa'
              else metrics.squad_em_f1(predictions, references))
    return {"exact_match": em, "f1": f1}


def rescore(folder: Path) -> dict:
    """task -> lang -> metrics of every `test-<lang>.<suffix>` under folder/predictions, against folder/labels."""
    out: dict = {}
    for task_dir in sorted((folder / "predictions").iterdir()):
        task = task_dir.name
        for path in sorted(task_dir.glob(f"test-*.{suffix(task)}")):
            lang = path.name[len("test-"):-len(suffix(task)) - 1]
            out.setdefault(task, {})[lang] = score_files(task, lang, path, folder / "labels" / task / path.name)
    return out


# ------------------------------------------------------------ fast: each writer's format


RECORDS = {
    "xnli": {"de": {"predicted": [0, 2, 1], "gold": [0, 1, 1]}},
    "pawsx": {"fr": {"predicted": [1, 0], "gold": [1, 1]}},
    "udpos": {"de": {"predicted": [["DET", "NOUN"], [], ["PRON", "VERB", "PUNCT"]],
                     "gold": [["DET", "NOUN"], [], ["PRON", "AUX", "PUNCT"]]}},
    "panx": {"ru": {"predicted": [["B-PER", "I-PER", "O"], ["O"]], "gold": [["B-PER", "I-PER", "O"], ["B-LOC"]]}},
    "mlqa": {"hi": {"predicted": {"q1": "दिल्ली", "q2": "", "q3": "1857"},
                    "gold": [{"id": "q1", "context": "c one", "question": "कहाँ?",
                              "answers": {"text": ["दिल्ली"], "answer_start": [0]}},
                             {"id": "q2", "context": "c one", "question": "x?",
                              "answers": {"text": ["a b"], "answer_start": [2]}},
                             {"id": "q3", "context": "c two", "question": "y?",
                              "answers": {"text": ["1857", "in 1857"], "answer_start": [3, 0]}}]}},
    "tatoeba": {"de": {"predicted": [0, 5, 2], "gold": [[0, 0], [1, 1], [2, 2]]}},
    "bucc2018": {"de": {"predicted": [[7, 1], [0, 41]], "gold": [[0, 41], [3, 2], [0, 41]]},
                 "fr": {"predicted": [["fr-000413482", "en-000367951"]],  # the official corpora's own ids
                        "gold": [["fr-000413482", "en-000367951"], ["fr-000413461", "en-000091985"]]}},
}


def test_each_writer_writes_what_evaluate_py_reads(tmp_path):
    """The exact text of each format (evaluate.py readers; mock_test_data's shapes) and its meaning read back."""
    written = write_submission(tmp_path, RECORDS)
    assert {p.relative_to(tmp_path).as_posix() for p in written} == (
        {f"{k}/{t}/test-{l}.{suffix(t)}" for k in ("predictions", "labels") for t, ls in RECORDS.items() for l in ls}
        | {"predictions.zip"})
    p, l = tmp_path / "predictions", tmp_path / "labels"
    # classification: the label strings XTREME's run_classify.py writes (label_list[p]); PAWS-X's are 0 / 1
    assert (p / "xnli/test-de.tsv").read_text() == "entailment\ncontradiction\nneutral\n"
    assert (l / "xnli/test-de.tsv").read_text() == "entailment\nneutral\nneutral\n"
    assert read_label(p / "pawsx/test-fr.tsv") == ["1", "0"]
    # tagging: one tag per line, a blank line between sentences; an empty sentence inside survives
    assert (p / "udpos/test-de.tsv").read_text() == "DET\nNOUN\n\n\nPRON\nVERB\nPUNCT\n"
    assert read_tag(l / "udpos/test-de.tsv") == RECORDS["udpos"]["de"]["gold"]
    assert read_tag(p / "panx/test-ru.tsv") == RECORDS["panx"]["ru"]["predicted"]
    # QA: {id: text}; labels SQuAD v1.1 JSON, one paragraph per run of questions on one context; ASCII-escaped
    assert read_squad(p / "mlqa/test-hi.json") == RECORDS["mlqa"]["hi"]["predicted"]
    assert (p / "mlqa/test-hi.json").read_text().isascii() and (l / "mlqa/test-hi.json").read_text().isascii()
    labels = json.loads((l / "mlqa/test-hi.json").read_text())
    assert labels["version"] == "1.1" and [len(x["qas"]) for x in labels["data"][0]["paragraphs"]] == [2, 1]
    assert labels["data"][0]["paragraphs"][1]["qas"][0]["answers"] == [{"text": "1857", "answer_start": 3},
                                                                       {"text": "in 1857", "answer_start": 0}]
    assert squad_references(read_squad(l / "mlqa/test-hi.json")) == {"q1": ["दिल्ली"], "q2": ["a b"],
                                                                     "q3": ["1857", "in 1857"]}
    # Tatoeba: one predicted index per English query; labels the gold indices
    assert read_label(p / "tatoeba/test-de.tsv") == ["0", "5", "2"] and read_label(l / "tatoeba/test-de.tsv") == ["0", "1", "2"]
    # BUCC: `xx-id<TAB>en-id` pairs (1-based positions, nine digits), sorted; gold pairs once each
    assert (p / "bucc2018/test-de.tsv").read_text() == "de-000000001\ten-000000042\nde-000000008\ten-000000002\n"
    assert read_label(l / "bucc2018/test-de.tsv") == ["de-000000001\ten-000000042", "de-000000004\ten-000000003"]
    assert read_label(l / "bucc2018/test-fr.tsv") == ["fr-000413461\ten-000091985", "fr-000413482\ten-000367951"]
    # the zip holds the task folders at its root (README: one folder with a sub-folder per task)
    with zipfile.ZipFile(tmp_path / "predictions.zip") as zf:
        assert sorted(zf.namelist()) == sorted(f"{t}/test-{l}.{suffix(t)}" for t, ls in RECORDS.items() for l in ls)
        assert zf.read("xnli/test-de.tsv") == b"entailment\ncontradiction\nneutral\n"


def test_scores_read_back_equal_the_evaluators_own(tmp_path):
    """Files scored as evaluate.py reads them give what the metric functions give on the records."""
    write_submission(tmp_path, RECORDS)
    got = rescore(tmp_path)
    assert got["xnli"]["de"]["accuracy"] == metrics.accuracy([0, 2, 1], [0, 1, 1])
    assert got["udpos"]["de"]["f1"] == metrics.tag_f1(RECORDS["udpos"]["de"]["predicted"], RECORDS["udpos"]["de"]["gold"])
    qa = RECORDS["mlqa"]["hi"]
    assert tuple(got["mlqa"]["hi"].values()) == metrics.mlqa_em_f1(
        qa["predicted"], {g["id"]: g["answers"]["text"] for g in qa["gold"]}, "hi")
    assert got["tatoeba"]["de"]["accuracy"] == retrieval.tatoeba_score([0, 5, 2], RECORDS["tatoeba"]["de"]["gold"])
    assert got["bucc2018"]["de"]["f1"] == retrieval.bucc_pairs_f1([[7, 1], [0, 41]], [[0, 41], [3, 2]]) == 50.0
    assert got["bucc2018"]["fr"]["f1"] == pytest.approx(100 * 2 / 3)


def test_a_task_folder_is_replaced_whole_and_others_are_kept(tmp_path):
    write_submission(tmp_path, {"xnli": {"de": RECORDS["xnli"]["de"], "ru": RECORDS["xnli"]["de"]},
                                "tatoeba": RECORDS["tatoeba"]})
    write_submission(tmp_path, {"xnli": {"hi": RECORDS["xnli"]["de"]}})
    assert sorted(p.name for p in (tmp_path / "predictions/xnli").iterdir()) == ["test-hi.tsv"]
    assert sorted(p.name for p in (tmp_path / "labels/xnli").iterdir()) == ["test-hi.tsv"]
    assert (tmp_path / "predictions/tatoeba/test-de.tsv").exists()
    with zipfile.ZipFile(tmp_path / "predictions.zip") as zf:
        assert sorted(zf.namelist()) == ["tatoeba/test-de.tsv", "xnli/test-hi.tsv"]
    assert not list(tmp_path.rglob(".*"))


def test_every_target_has_a_format():
    for name, task in TASKS.items():
        if task.role == "target":
            assert suffix(name) == ("json" if name in ("xquad", "mlqa", "tydiqa") else "tsv")
    assert squad_json([], "x") == {"data": [{"title": "x", "paragraphs": []}], "version": "1.1"}
    with pytest.raises(ValueError):
        render("mnli", "en", {"predicted": [], "gold": []})  # intermediate tasks: no submission format


def test_the_cache_rebuilds_an_entry_its_caller_refuses(tmp_path):
    """`get_or_build(build, accept)`: a valid entry the caller refuses (a phase-3 entry without predictions) is
    rebuilt under the same key and replaces it; without `accept` it stays a hit."""
    from trainables.cache import Cache

    entry = Cache(tmp_path).entry("phase3", {"k": 1})
    entry.get_or_build(lambda tmp: (tmp / "a").write_text("old") and {"v": 1})
    has_b = lambda path: (path / "b").is_file()
    assert entry.get_or_build(lambda tmp: {"v": 2})[1:] == ({"v": 1}, True)
    path, meta, hit = entry.get_or_build(lambda tmp: (tmp / "b").write_text("new") and {"v": 2}, has_b)
    assert (meta, hit) == ({"v": 2}, False) and (path / "b").read_text() == "new" and not (path / "a").exists()
    assert entry.get_or_build(lambda tmp: {"v": 3}, has_b)[1:] == ({"v": 2}, True)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [path.name]


# ------------------------------------------------------------ slow: the pipeline and the CLI


TINY = ["model.mlm_steps=100", "model.hidden_size=32", "model.layers=1", "model.heads=2", "intermediate.mixture={}",
        "target.max_train_examples=40", "target.max_eval_examples=30", "target.epochs={xnli: 1, udpos: 1, mlqa: 1}",
        "tracking.enabled=false"]
TARGETS = "targets=[xnli,udpos,mlqa,tatoeba,bucc2018]"  # a target of each kind: classification, tagging, QA, retrieval x2


@pytest.fixture(scope="module")
def submitted(tmp_path_factory, toy_dir):
    tmp = tmp_path_factory.mktemp("predictions")
    cmd = [sys.executable, "-m", "search.cli", "run", "toy", f"data_dir={toy_dir}", f"cache_dir={tmp / 'cache'}",
           *TINY, TARGETS, "--json", str(tmp / "results.json"), "--predictions", str(tmp / "sub")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp, json.loads((tmp / "results.json").read_text()), out.stdout


@pytest.mark.slow
def test_run_predictions_rescore_to_the_results_json(submitted):
    """`xstilts run ... --predictions DIR`: a file per target and test language, nothing else; read back with
    evaluate.py's readers and scored with trainables.metrics, every language's numbers are the results JSON's."""
    tmp, results, stdout = submitted
    assert "test predictions" in stdout and str(tmp / "sub") in stdout
    expected = {t: e["languages"] for t, e in results["targets"].items()}
    assert set(expected) == {"xnli", "udpos", "mlqa", "tatoeba", "bucc2018"}
    assert rescore(tmp / "sub") == expected
    with zipfile.ZipFile(tmp / "sub" / "predictions.zip") as zf:
        assert sorted(zf.namelist()) == sorted(f"{t}/test-{l}.{suffix(t)}" for t, ls in expected.items() for l in ls)
    assert len(read_label(tmp / "sub/labels/xnli/test-de.tsv")) == 30  # target.max_eval_examples


@pytest.mark.slow
def test_entries_without_predictions_are_recomputed_only_when_asked(submitted, toy_dir):
    """A phase-3 entry written before entries kept predictions stays a cache hit for scoring; with predictions
    asked for, that target is recomputed (same key, same scores) and its entry then holds them."""
    from trainables.cache import MANIFEST
    from trainables.config import load_config
    from trainables.pipeline import Pipeline, phase3_entry, run_pipeline

    tmp, results, _ = submitted
    cfg = load_config("toy", [f"data_dir={toy_dir}", f"cache_dir={tmp / 'cache'}", *TINY, TARGETS])
    assert len(list((tmp / "cache").glob(f"phase3-*/{PREDICTIONS}"))) == 5
    pipe = Pipeline(cfg, log=lambda *a: None).prepare()
    old = phase3_entry(cfg, "xnli", pipe.encoder_dir, pipe.data_dir, pipe.device).path
    manifest = json.loads((old / MANIFEST).read_text())  # make it an entry of the previous version
    del manifest["files"][PREDICTIONS]
    (old / PREDICTIONS).unlink()
    (old / MANIFEST).write_text(json.dumps(manifest))

    again = run_pipeline(cfg, log=lambda *a: None)
    assert again["phase3_cache_hits"] == 5 and not (old / PREDICTIONS).exists()
    asked = run_pipeline(cfg, log=lambda *a: None, predictions=tmp / "sub2")
    assert asked["phase3_cache_hits"] == 4 and (old / PREDICTIONS).exists()
    assert asked["targets"] == results["targets"]
    assert rescore(tmp / "sub2") == {t: e["languages"] for t, e in results["targets"].items()}


@pytest.mark.slow
def test_run_refuses_predictions_without_the_test_split(tmp_path, toy_dir):
    out = subprocess.run([sys.executable, "-m", "search.cli", "run", "toy", f"data_dir={toy_dir}",
                          f"cache_dir={tmp_path / 'cache'}", *TINY, "targets=[xnli]", "eval_splits=[validation]",
                          "--predictions", str(tmp_path / "sub")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "eval_splits" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "sub").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_export_predictions_of_search_trials(submitted, toy_dir):
    """`xstilts export SEARCH --trial N --predictions DIR`: the trial's encoder from the cache, phase 3 from the
    entries the search wrote (cache hits); rescored, the files give the per-language test metrics the trial logged
    to MLflow. The baseline trial exports predictions too; a search without the trial is refused in one line."""
    from mlflow import MlflowClient

    tmp, _, _ = submitted
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    pipeline = [f"data_dir={toy_dir}", f"cache_dir={tmp / 'cache'}", *TINY[:-1], "targets=[xnli,tatoeba]",
                "intermediate.steps=20"]
    out = subprocess.run([sys.executable, "-m", "search.cli", "search", "name=preds", f"storage={tmp / 'searches'}",
                          "num_samples=2", "overrides=" + json.dumps(pipeline), f"tracking_uri={uri}",
                          "scheduler={enabled: false}", "points_to_evaluate=[{}, {mnli: 1.0}]"],
                         capture_output=True, text=True, cwd=tmp, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp / "searches/preds/summary.json").read_text())
    cli = [sys.executable, "-m", "search.cli", "export", str(tmp / "searches/preds")]
    for trial in summary["trials"]:
        folder = tmp / f"export-{trial['number']}"
        done = subprocess.run(cli + ["--trial", str(trial["number"]), "--predictions", str(folder)],
                              capture_output=True, text=True, cwd=tmp, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert re.findall(r"^\s+(\w+)\s+cache hit$", done.stdout, re.M) == ["xnli", "tatoeba"], done.stdout
        logged = MlflowClient(uri).get_run(trial["mlflow_run_id"]).data.metrics
        got = rescore(folder)
        assert set(got) == {"xnli", "tatoeba"}
        for task, langs in got.items():
            for lang, values in langs.items():
                for metric, value in values.items():
                    assert value == pytest.approx(logged[f"target/{task}/{lang}/{metric}"], abs=1e-9), (task, lang)
    bad = subprocess.run(cli + ["--trial", "99", "--predictions", str(tmp / "x")], capture_output=True, text=True,
                         cwd=tmp)
    assert bad.returncode == 2 and "no finished or pruned trial 99" in bad.stderr and not (tmp / "x").exists()
    bare = subprocess.run(cli, capture_output=True, text=True, cwd=tmp)
    assert bare.returncode == 2 and "--predictions" in bare.stderr
