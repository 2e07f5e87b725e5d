"""Numbers XTREME would print (issue 21): BUCC's test set is XTREME's (the BUCC 2018 training corpora, with their
distractors), a search never puts a gold-only BUCC dev set in its objective, and a score is called XTREME only
when XTREME's evaluate.py would print it (nine targets, every language it lists, whole test sets).

Run: pytest tests/test_xtreme_fidelity.py
"""

from pathlib import Path

import pytest

import hub_fixtures
from trainables import data, metrics, readers
from trainables.errors import XstiltsError
from trainables.pipeline import summarise
from trainables.tasks import TARGETS, TASKS

ROOT = Path(__file__).resolve().parents[1]


def raw_bucc(lang: str, split: str, src: list[tuple[str, str]], trg: list[tuple[str, str]],
             gold: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Files of BUCC 2018's release layout (`bucc2018-<xx>-en.<split>-gold.tar.bz2`, extracted), as ROWS entries."""
    folder = f"bucc2018/{lang}-en/{lang}-en.{split}"
    return {f"{folder}.{lang}": [f"{i}\t{s}" for i, s in src], f"{folder}.en": [f"{i}\t{s}" for i, s in trg],
            f"{folder}.gold": [f"{a}\t{b}" for a, b in gold]}


# ---------------------------------------------------------------- BUCC test = XTREME's test


def test_bucc_test_is_read_from_the_official_training_corpora(tmp_path):
    """de: the training corpora in the raw layout (ids out of line order, distractors on both sides) win over an
    mteb/BUCC copy; ru has only mteb/BUCC (the same corpora, with distractors): read as the stand-in."""
    rows = {**raw_bucc("de", "training", [("de-000000007", "Sieben"), ("de-000000002", "Zwei"), ("de-000000003", "Drei")],
                       [("en-000000005", "five"), ("en-000000001", "two"), ("en-000000009", "seven")],
                       [("de-000000002", "en-000000001"), ("de-000000007", "en-000000009")]),
            **{f"mteb/BUCC/{l}-en/test.parquet": [{"sentence1": [f"{l} a", f"{l} b", f"{l} c"],
                                                   "sentence2": ["x", "y", "z", "w"], "gold": [[1, 2], [3, 4]]}]
               for l in ("de", "ru")}}
    d = hub_fixtures.write(tmp_path, rows)
    test = data.load_split("bucc2018", "test", d)
    de, ru = test["de"][0], test["ru"][0]
    assert de["origin"] == "training corpora" and de["sources"] == ["Sieben", "Zwei", "Drei"]
    assert de["targets"] == ["five", "two", "seven"] and de["gold"] == [[1, 1], [0, 2]]
    assert ru["origin"] == "mteb/BUCC" and ru["gold"] == [[0, 1], [2, 3]]
    read = [e[1] for e in data.inputs("bucc2018", "test", d, pin=False)]  # cache keys: what is read, only
    assert "bucc2018/de-en/de-en.training.gold" in read and "mteb/BUCC/ru-en/test.parquet" in read
    assert "mteb/BUCC/de-en/test.parquet" not in read


def test_toy_writes_bucc_training_corpora_with_distractors(toy_dir):
    """The toy's BUCC test set comes through the real path: the raw training corpora, gold among distractors."""
    assert not (toy_dir / "mteb").exists()
    test = data.load_split("bucc2018", "test", toy_dir)
    assert set(test) == {"de", "ru"}
    for lang, (corpus,) in test.items():
        for ext in (lang, "en", "gold"):
            assert (toy_dir / f"bucc2018/{lang}-en/{lang}-en.training.{ext}").is_file()
        assert corpus["origin"] == "training corpora" and readers.without_distractors(corpus) is None
        assert len(corpus["gold"]) == 200 and len(corpus["sources"]) == len(corpus["targets"]) == 400


def test_gold_only_test_corpus_is_refused_with_one_line(tmp_path):
    """mteb/BUCC as MTEB's BUCC task hands it to a model (its loader keeps only the gold-aligned xx sentences):
    mining that is another task than XTREME's BUCC; refused, naming the official files."""
    rows = {"mteb/BUCC/de-en/test.parquet": [{"sentence1": ["de a", "de b"], "sentence2": ["x", "y", "z"],
                                              "gold": [[1, 2], [2, 3]]}]}
    d = hub_fixtures.write(tmp_path, rows, languages=["en", "de"])
    with pytest.raises(XstiltsError) as exc:
        data.load_split("bucc2018", "test", d)
    msg = str(exc.value)
    assert "\n" not in msg and msg.count(" — ") == 1
    assert msg.startswith("bucc2018 test (de): mteb/BUCC holds only gold-aligned sentences on its non-English side")
    assert "bucc2018-<xx>-en.{sample,training}-gold.tar.bz2" in msg and str(d) in msg
    # the English side alone without distractors is refused as well
    assert readers.without_distractors({"sources": ["a", "b", "c"], "targets": ["x", "y"], "gold": [[0, 0], [1, 1]]}) == "targets"


# ---------------------------------------------------------------- a search never tunes on gold-only BUCC dev


def test_search_with_gold_only_bucc_dev_is_refused_before_writing(tmp_path, monkeypatch, capsys, toy_dir):
    """The toy benchmark without ru's BUCC sample corpora: ru's dev set would be google/xtreme's gold pairs. A
    search with bucc2018 in its objective stops in preflight, in one line, and writes nothing (no storage, no
    MLflow store)."""
    import shutil

    from search.cli import main

    for var in ("XSTILTS_HOME", "XSTILTS_CACHE", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    d = shutil.copytree(toy_dir, tmp_path / "data")
    for path in (d / "bucc2018/ru-en").glob("ru-en.sample.*"):
        path.unlink()
    before = set(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "toy", f"overrides=[\"data_dir={d}\", \"targets=[xnli,bucc2018]\"]", "storage=storage"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert "gold-only dev set (ru" in err and f"{d}/bucc2018/" in err
    assert "targets=[xnli]" in err and "local_only" in err  # how to drop it, where the corpora come from
    assert set(tmp_path.rglob("*")) == before and not (tmp_path / "storage").exists()


def test_objective_check_passes_with_sample_corpora_or_without_bucc(tmp_path):
    from search.tuner import check_objective
    from trainables.config import load_config

    d = hub_fixtures.write(tmp_path, {**hub_fixtures.ROWS, **raw_bucc(
        "ru", "sample", [("ru-000000001", "odin"), ("ru-000000002", "dva")], [("en-000000001", "one"), ("en-000000002", "x")],
        [("ru-000000001", "en-000000001")])})
    base = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={d}", "targets=[xnli,bucc2018]"])
    check_objective(base, d)  # sample corpora for every language: nothing gold-only
    assert data.gold_only_languages("bucc2018", "validation", d) == []
    gold_only = hub_fixtures.write(tmp_path / "gold_only")
    assert data.gold_only_languages("bucc2018", "validation", gold_only) == ["ru"]
    check_objective(load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={gold_only}", "targets=[xnli,pawsx]"]),
                    gold_only)  # BUCC not in the objective: fine


# ---------------------------------------------------------------- XTREME only when complete


def complete(value: float = 50.0) -> dict:
    """Every target on every language XTREME lists for it (test split)."""
    return {t: {lang: {"exact_match": value, "f1": value} if TASKS[t].kind == "span_qa" else {TASKS[t].metric: value}
                for lang in TASKS[t].languages} for t in TARGETS}


def test_xtreme_needs_every_language_of_every_target():
    assert metrics.xtreme_score(complete())["xtreme"] == pytest.approx(50.0)
    partial = complete()
    del partial["xnli"]["sw"], partial["tatoeba"]["jv"]
    out = metrics.xtreme_score(partial)
    assert out["xtreme"] is None and out["average"] == pytest.approx(50.0)
    assert out["missing"] == {"languages": {"xnli": ["sw"], "tatoeba": ["jv"]}}
    line = metrics.describe(out["missing"], 9)
    assert line.startswith("average of 9 targets (not XTREME: ") and "xnli 14 of 15" in line and "tatoeba 35 of 36" in line


def test_xtreme_not_on_capped_test_sets():
    out = metrics.xtreme_score(complete(), max_eval_examples=100)
    assert out["xtreme"] is None and out["missing"] == {"max_eval_examples": 100}
    assert "target.max_eval_examples=100 caps the test sets" in metrics.describe(out["missing"], 9)


def test_results_say_average_of_k_targets_and_what_is_missing():
    """The pipeline's summary (results JSON, MLflow): `xtreme` null with the reason — the toy's four languages,
    a cap, or a BUCC threshold tuned on gold-only dev pairs; XTREME for the complete, uncapped case only."""
    per_target = {t: {"test": langs} for t, langs in complete().items()}
    full = summarise(per_target, "test")
    assert full["xtreme"] == pytest.approx(50.0) and full["score_name"] == "XTREME" and full["missing"] is None
    capped = summarise(per_target, "test", max_eval_examples=100)
    assert capped["xtreme"] is None and capped["missing"] == {"max_eval_examples": 100}
    notes = {"bucc2018": {"threshold_from": {"de": "gold-only dev", "fr": "sample corpora"}}}
    stand_in = summarise(per_target, "test", notes)
    assert stand_in["xtreme"] is None and stand_in["missing"] == {"stand_ins": {"bucc2018": ["de"]}}
    toy = {t: {"test": {l: v for l, v in langs.items() if l in ("en", "de", "ru", "hi")}}
           for t, langs in complete().items()}
    toy_summary = summarise(toy, "test")
    assert toy_summary["xtreme"] is None and toy_summary["average"] == pytest.approx(50.0)
    assert toy_summary["missing"]["languages"]["bucc2018"] == ["fr", "zh"]
    assert toy_summary["score_name"].startswith("average of 9 targets (not XTREME: languages scored: xnli 4 of 15")


def test_report_calls_nine_targets_xtreme_only_when_the_trials_logged_it():
    from search.report import _trial_rows, build_rows
    from trainables import names
    from trainables.tracking import RunRecord

    def run(n: int, xtreme: bool) -> RunRecord:
        metrics_ = {names.average("validation"): 50.0, names.average("test"): 50.0,
                    **{names.target_score(t, "test"): 50.0 for t in TARGETS}, names.target_score("xnli", "validation"): 50.0}
        if xtreme:
            metrics_[names.xtreme("test")] = 50.0
        return RunRecord(f"r{n}", "FINISHED", params={}, metrics=metrics_, tags={"optuna.trial": str(n)})

    toy = build_rows(_trial_rows([run(0, xtreme=False)], "test"))
    assert toy["score_name"] == "avg of 9" and toy["rows"][0]["xtreme"] is None and toy["best_per_target_xtreme"] is None
    real = build_rows(_trial_rows([run(0, xtreme=True)], "test"))
    assert real["score_name"] == "XTREME" and real["rows"][0]["xtreme"] == 50.0
