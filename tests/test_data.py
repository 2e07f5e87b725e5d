"""The data layer on rows written in each Hub dataset's exact schema: every task, through the real loader.

Run: pytest tests/test_data.py
"""

import pytest

import hub_fixtures
from trainables import data
from trainables.errors import XstiltsError
from trainables.tasks import TASKS, get_task


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    return hub_fixtures.write(tmp_path_factory.mktemp("hub"))


def test_every_task_has_fixture_expectations():
    assert set(hub_fixtures.EXPECTED) == set(TASKS)


@pytest.mark.parametrize("task", sorted(hub_fixtures.EXPECTED))
def test_every_task_loads_from_hub_schema_rows(hub_dir, task):
    for split, langs in hub_fixtures.EXPECTED[task].items():
        got = data.load_split(task, split, hub_dir)
        assert {lang: data.count(get_task(task), exs) for lang, exs in got.items()} == langs, (task, split)


def test_labels_normalise_across_schemas(hub_dir):
    anli = data.load_split("anli_plus", "train", hub_dir)["en"]
    assert sorted(e["label"] for e in anli) == [0, 0, 1, 1, 2, 2]  # SNLI's -1 row is gone
    assert data.load_split("hellaswag", "train", hub_dir)["en"][0]["label"] == 0  # string "0"
    hs = data.load_split("hellaswag", "train", hub_dir)["en"][0]
    assert hs["context"] == "She mixes flour." and hs["choices"][0] == "then she bakes it."
    cosmos = data.load_split("cosmosqa", "train", hub_dir)["en"][0]  # from the raw CSV
    assert cosmos["label"] == 0 and cosmos["context"] == "It rained. Why wet?" and len(cosmos["choices"]) == 4
    csqa = data.load_split("commonsenseqa", "train", hub_dir)["en"][0]
    assert csqa["choices"][csqa["label"]] == "water"  # answerKey "C"
    xnli = data.load_split("xnli", "validation", hub_dir)["de"]
    assert [(e["text_a"], e["label"]) for e in xnli] == [("p-de", 1), ("q-de", 2)]
    assert data.load_split("pawsx", "test", hub_dir)["de"][0]["label"] == 1


def test_tags_are_names_on_both_tagging_schemas(hub_dir):
    panx = data.load_split("panx", "validation", hub_dir)["de"][0]
    assert panx["tags"] == ["B-PER", "I-PER", "O", "B-LOC"]
    pos = data.load_split("udpos", "train", hub_dir)["en"][0]
    assert pos["tags"] == ["DET", "NOUN", "VERB"]
    ccg = data.load_split("ccg", "train", hub_dir)["en"]
    assert data.tag_labels(get_task("ccg"), ccg) == ("N/N", "S\\NP")  # derived from the data


def test_squad_v2_keeps_unanswerable(hub_dir):
    exs = data.load_split("squad_v2", "train", hub_dir)["en"]
    assert [len(e["answers"]["text"]) for e in exs] == [1, 0]


def test_tydiqa_language_from_id_prefix_and_english_only_training(hub_dir):
    assert [e["id"] for e in data.load_split("tydiqa", "train", hub_dir)["en"]] == ["english-1"]
    assert [e["id"] for e in data.load_split("tydiqa", "test", hub_dir)["ru"]] == ["russian-4", "russian-5"]


def test_single_split_targets_are_read_as_test_never_as_validation(hub_dir):
    """XQuAD, TyDiQA-GoldP and Tatoeba have one labelled split, which XTREME reports as test: nothing of it may
    reach selection or the search objective (both read validation only)."""
    for task in ("xquad", "tydiqa", "tatoeba"):
        assert data.load_split(task, "validation", hub_dir) == {}, task
        assert data.load_split(task, "test", hub_dir), task
        assert not get_task(task).has_validation
    assert all(get_task(t).has_validation for t in ("xnli", "pawsx", "udpos", "panx", "mlqa", "bucc2018"))


def test_udpos_languages_per_split(tmp_path):
    """UD v2.5 has no dev data for kk, th, tl, yo (google/xtreme has no validation split for them): validation
    covers jiant's 29 languages, test all 33; a data_dir without kk validation files loads fine."""
    rows = {"google/xtreme/udpos.English/validation.parquet": [{"tokens": ["a"], "pos_tags": [7]}],
            "google/xtreme/udpos.English/train.parquet": [{"tokens": ["t"], "pos_tags": [7]}],
            "google/xtreme/udpos.Kazakh/test.parquet": [{"tokens": ["k"], "pos_tags": [7]}],
            "google/xtreme/udpos.English/test.parquet": [{"tokens": ["b"], "pos_tags": [7]}]}
    hub_fixtures.write(tmp_path, rows, ["en", "kk"])
    assert set(data.load_split("udpos", "validation", tmp_path)) == {"en"}
    assert set(data.load_split("udpos", "test", tmp_path)) == {"en", "kk"}
    udpos = get_task("udpos")
    assert len(udpos.languages_for("validation")) == 29 and len(udpos.languages_for("test")) == 33
    assert set(udpos.languages_for("test")) - set(udpos.languages_for("validation")) == {"kk", "th", "tl", "yo"}
    assert data.inspect("udpos", tmp_path)["splits"] == {"train": {"en": 1}, "validation": {"en": 1},
                                                         "test": {"en": 1, "kk": 1}}

    asked = []

    def fake_hub(source, config, split):
        asked.append((config, split))
        return [{"tokens": ["x"], "pos_tags": [7]}]

    written = data.prepare(["udpos"], tmp_path / "prepared", loader=fake_hub)
    names = {str(p.relative_to(tmp_path / "prepared")) for p in written}
    assert ("udpos.Kazakh", "test") in asked and ("udpos.Kazakh", "validation") not in asked
    assert "google/xtreme/udpos.Kazakh/test.parquet" in names and "google/xtreme/udpos.Kazakh/validation.parquet" not in names


def test_retrieval_corpora(hub_dir):
    tato = data.load_split("tatoeba", "test", hub_dir)["de"][0]
    assert tato["sources"] == ["deu one", "deu two"] and tato["targets"] == ["one", "two"]  # "\n" stripped
    bucc_dev = data.load_split("bucc2018", "validation", hub_dir)["ru"][0]  # no sample corpora: gold pairs
    assert bucc_dev["gold"] == [[0, 0], [1, 1]] and bucc_dev["targets"] == ["one", "two"]
    assert bucc_dev["origin"] == "gold-only dev"
    sample = data.load_split("bucc2018", "validation", hub_dir)["de"]  # the official sample layout wins
    assert len(sample) == 1 and sample[0]["origin"] == "sample corpora"
    assert sample[0]["sources"] == ["Eins", "Zwei", "Drei"] and sample[0]["targets"] == ["one", "two", "four"]
    assert sample[0]["gold"] == [[0, 0], [1, 1]]  # "Drei" has no translation: a distractor, as in BUCC
    bucc_test = data.load_split("bucc2018", "test", hub_dir)["de"][0]
    assert bucc_test["gold"] == [[0, 1], [2, 3]]  # mteb/BUCC's 1-based gold made 0-based
    assert bucc_test["sources"][2] == "de c" and bucc_test["targets"][3] == "w"


def test_manifest_limits_languages(hub_dir):
    assert data.task_languages(get_task("panx"), hub_dir) == ["en", "de", "ru"]


def test_missing_source_offline_is_a_clear_error(tmp_path):
    hub_fixtures.write(tmp_path, {}, ["en", "de"])
    with pytest.raises(XstiltsError, match="missing source offline.*facebook/xnli/de/validation.*xstilts data prepare"):
        data.load_split("xnli", "validation", tmp_path)


def test_wrong_columns_are_a_clear_error(tmp_path):
    hub_fixtures.write(tmp_path, {"nyu-mll/glue/mnli/train.parquet": [{"sentence1": "a", "sentence2": "b", "label": 0}]})
    with pytest.raises(XstiltsError, match=r"wrong columns.*missing \['premise', 'hypothesis', 'idx'\]"):
        data.load_split("mnli", "train", tmp_path)


def test_ccg_without_local_files_says_it_is_licensed(tmp_path):
    with pytest.raises(XstiltsError, match="licensed"):
        data.load_split("ccg", "train", tmp_path)


def test_corrupted_file_is_a_clear_error(tmp_path):
    path = tmp_path / "nyu-mll/glue/sst2/train.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(XstiltsError, match="cannot read .*train.parquet.*re-run `xstilts data prepare`"):
        data.load_split("sst2", "train", tmp_path)


def test_prepare_writes_the_local_layout_from_a_source(tmp_path):
    """`prepare` against a fake Hub: the files land where the loader looks, and load back identically."""
    calls = []

    def fake_hub(source, config, split):
        calls.append((source.hub_id, config, split))
        return [r for r in hub_fixtures.ROWS[f"google/xtreme/PAN-X.de/validation.parquet"]]

    written = data.prepare(["panx"], tmp_path, loader=fake_hub)
    assert (tmp_path / "google/xtreme/PAN-X.en/train.parquet") in written
    assert (tmp_path / "google/xtreme/PAN-X.sw/test.parquet").exists()
    assert not (tmp_path / "google/xtreme/PAN-X.sw/train.parquet").exists()  # zero-shot: English train only
    assert len(written) == 1 + 2 * 40
    assert data.load_split("panx", "validation", tmp_path, languages=["sw"])["sw"][0]["tags"][0] == "B-PER"
    again = data.prepare(["panx"], tmp_path, loader=fake_hub)
    assert again == [] and len(calls) == len(written)  # nothing downloaded twice
