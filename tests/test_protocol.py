"""XTREME's protocol: model selection and the search objective never read a split reported as test.

jiant (jiant/scripts/benchmarks/xtreme/xtreme_runconfig_writer.py) selects XNLI on MNLI dev and XQuAD/MLQA on
SQuAD v1.1 dev; xstilts does the same, and TyDiQA-GoldP (whose English dev set is XTREME's test set) selects on
a held-out slice of its English training set. Run: pytest tests/test_protocol.py
"""

from pathlib import Path

import pytest

import hub_fixtures
from trainables import data
from trainables.config import load_config
from trainables.pipeline import load_all, selection_split, summarise
from trainables.tasks import TARGETS, get_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    return hub_fixtures.write(tmp_path_factory.mktemp("hub"))


def test_selection_uses_the_training_tasks_dev_set(hub_dir):
    train = data.load_split("xnli", "train", hub_dir)["en"]
    kept, selection = selection_split(get_task("xnli"), train, hub_dir)
    assert kept == train and [e["text_a"] for e in selection] == ["x"]  # MNLI validation_matched, not XNLI
    _, squad_dev = selection_split(get_task("xquad"), data.load_split("xquad", "train", hub_dir)["en"], hub_dir)
    assert [e["id"] for e in squad_dev] == ["en-2"]  # SQuAD v1.1 dev, not XQuAD


def test_tydiqa_selects_on_held_out_training_examples():
    train = [{"id": f"english-{i}"} for i in range(40)]
    kept, held = selection_split(get_task("tydiqa"), train, None)
    assert len(held) == 4 and len(kept) == 36 and not {e["id"] for e in held} & {e["id"] for e in kept}


def test_no_target_selects_or_optimises_on_its_test_split(hub_dir):
    """Every fine-tuned target names a selection source that is a dev set or a training hold-out, and the
    validation summary (the objective) only holds targets with a validation split."""
    for name in TARGETS:
        task = get_task(name)
        if task.selection:
            source, kind = task.selection
            assert kind in ("validation", "holdout")
            assert kind == "holdout" or get_task(source).has_validation
    cfg = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={hub_dir}", "intermediate.mixture={}",
                                                           "targets=[xquad,tydiqa,tatoeba]"])
    loaded = load_all(cfg, Path(hub_dir))["targets"]
    for name in ("xquad", "tydiqa", "tatoeba"):
        assert loaded[name]["validation"] == {} and loaded[name]["test"]
    fake = {t: {"test": {"en": {"accuracy": 50.0, "exact_match": 1.0, "f1": 2.0}}} for t in ("xquad", "tatoeba")}
    fake["xnli"] = {"validation": {"en": {"accuracy": 70.0}}, "test": {"en": {"accuracy": 60.0}}}
    assert set(summarise(fake, "validation")["targets"]) == {"xnli"}
