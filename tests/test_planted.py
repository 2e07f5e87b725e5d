"""The toy's planted scaling truth (trainables/planted.py) and the scaling study that must find it.

Fast: the shift moves a target's score, and every average, by exactly the planted amount for each kind of target;
only the toy may carry it; a scaling config passes its knob, each model's nominal size and own seeds to the runs.
Slow: a pipeline run with the knob against the same run without it (the phase-3 cache keeps the unshifted scores),
and the planted world end to end: one tiny toy model at three sizes, each with its own seeds, with the knob on the
study reports diminishing returns with its interval below zero and a slope that is the knob-off study's slope plus
exactly the planted amount, over the same runs; with the knob off (no trend at all) it does not claim one. How
often a study with no trend claims one, over many studies: tests/test_slope.py (the same statistics, simulated).

Run: pytest tests/test_planted.py
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from trainables.errors import XstiltsError
from trainables.metrics import task_score
from trainables.planted import shift, shifted

ROOT = Path(__file__).resolve().parents[1]

# target -> one language's metrics, in the shapes phase 3 stores (QA: exact match and F1; others one metric)
SPLITS = {"xnli": {"validation": {"en": {"accuracy": 61.0}, "de": {"accuracy": 50.5}}},
          "udpos": {"test": {"en": {"f1": 80.0}, "hi": {"f1": 44.0}}},
          "xquad": {"test": {"en": {"exact_match": 40.0, "f1": 52.0}, "ru": {"exact_match": 10.0, "f1": 21.0}}},
          "tatoeba": {"test": {"de": {"accuracy": 90.0}}}}


def test_the_shift_moves_every_score_and_average_by_exactly_the_planted_amount():
    from trainables.pipeline import summarise

    assert shift(-3.0, 1e6) == 0.0 and shift(-3.0, 1e8) == pytest.approx(-6.0) and shift(2.0, 1e7) == 2.0
    delta = shift(-3.0, 3.0e7)
    moved = {t: shifted(t, s, delta) for t, s in SPLITS.items()}
    for target, splits in SPLITS.items():
        for split, langs in splits.items():
            assert task_score(target, moved[target][split]) == pytest.approx(task_score(target, langs) + delta)
    for split in ("validation", "test"):
        before, after = summarise(SPLITS, split), summarise(moved, split)
        assert after["average"] == pytest.approx(before["average"] + delta)
        assert after["targets"].keys() == before["targets"].keys()
    assert shifted("xnli", SPLITS["xnli"], 0.0) is SPLITS["xnli"]  # knob off: the stored scores themselves


def test_only_the_toy_carries_a_planted_truth():
    from trainables.config import load_config

    assert load_config("toy", ["planted_scaling.slope=-2"]).planted_scaling.slope == -2.0
    with pytest.raises(XstiltsError, match="is the toy world's known answer"):
        load_config("toy", ["model.name=xlm-roberta-large", "planted_scaling.slope=-2"])
    with pytest.raises(XstiltsError, match="params"):
        load_config("toy", ["planted_scaling.params=-5"])


def test_a_planted_study_gives_each_model_its_size_its_own_seeds_and_the_knob():
    from search.scaling import _search_cfg, load_scaling_config
    from search.tuner import base_config

    study = load_scaling_config(ROOT / "configs/search/scaling_planted.yaml")
    runs = [base_config(_search_cfg(study, m, first=3, count=2)) for m in study.models]
    assert [r.planted_scaling.params for r in runs] == [1e6, 1e7, 1e8]
    assert {r.planted_scaling.slope for r in runs} == {study.planted} and study.planted < 0
    assert [r.seed for r in runs] == [3, 103, 203]  # a later batch starts from each model's own first seed
    assert len({r.model for r in runs}) == 1  # one toy model: the only trend is the planted one
    off = load_scaling_config(ROOT / "configs/search/scaling_planted.yaml", ["planted=0"])
    assert base_config(_search_cfg(off, off.models[0])).planted_scaling.slope == 0.0


# ------------------------------------------------------------------------------------- slow: real runs

TINY = ["model.mlm_steps=300", "model.hidden_size=32", "model.layers=1", "model.heads=2", "targets=[xnli]",
        "target.max_train_examples=100", "target.max_eval_examples=60", "target.epochs={xnli: 2}",
        "intermediate.steps=60", "tracking.enabled=false"]


@pytest.mark.slow
def test_a_run_with_the_knob_is_the_same_run_shifted(toy_dir, tmp_path):
    from trainables.config import load_config
    from trainables.pipeline import run_pipeline

    base = [f"data_dir={toy_dir}", f"cache_dir={tmp_path / 'cache'}", *TINY]
    plain = run_pipeline(load_config("toy", base + ["intermediate.mixture={mnli: 1.0}"]), log=lambda *a: None)
    knob = ["planted_scaling.slope=-3", "planted_scaling.params=1e8"]
    planted = run_pipeline(load_config("toy", base + ["intermediate.mixture={mnli: 1.0}"] + knob), log=lambda *a: None)
    assert planted["phase3_cache_hits"] == 1  # the same run: its scores come back from the cache, unshifted there
    assert planted["planted_scaling"] == {"slope": -3.0, "params": 1e8, "shift": pytest.approx(-6.0)}
    for split in ("validation", "test"):
        a = plain if split == "test" else plain["validation"]
        b = planted if split == "test" else planted["validation"]
        assert b["average"] == pytest.approx(a["average"] - 6.0)
        assert b["targets"]["xnli"]["score"] == pytest.approx(a["targets"]["xnli"]["score"] - 6.0)
    # what a search trial combines over seeds (the results `targets()` yields) is shifted the same way
    from trainables.pipeline import Pipeline

    (result,) = list(Pipeline(load_config("toy", base + ["intermediate.mixture={mnli: 1.0}"] + knob),
                              log=lambda *a: None).targets())
    assert task_score("xnli", result.splits["validation"]) == pytest.approx(
        planted["validation"]["targets"]["xnli"]["score"])
    baseline = run_pipeline(load_config("toy", base + ["intermediate.mixture={}"] + knob), log=lambda *a: None)
    alone = run_pipeline(load_config("toy", base + ["intermediate.mixture={}"]), log=lambda *a: None)
    assert baseline["average"] == alone["average"] and "planted_scaling" not in baseline  # never shifted


def _study(tmp_path: Path, toy_dir, name: str, planted: float, seeds) -> tuple[dict, str]:
    over = json.dumps([f"storage={tmp_path / 'searches'}", f"tracking_uri=sqlite:///{tmp_path / 'm.db'}",
                       "intermediate_lr=null", "max_concurrent_trials=2",
                       "overrides=" + json.dumps([f"data_dir={toy_dir}", f"cache_dir={tmp_path / 'cache'}", *TINY])])
    model = '"model.hidden_size=32", "model.layers=1", "model.heads=2"'
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"""name: {name}
search: configs/search/toy.yaml
overrides: {over}
planted: {planted}
models:  # one tiny toy model: its own size (computed), then two nominal sizes; each with its own seeds
  - {{label: own, overrides: [{model}, "seed=0"]}}
  - {{label: n10m, params: 1.0e7, overrides: [{model}, "seed=100"]}}
  - {{label: n100m, params: 1.0e8, overrides: [{model}, "seed=200"]}}
configurations: [{{}}, {{mnli: 1.0}}]
seeds: {seeds}
auto: {{start: 2, step: 1, most: 3, min_effect: 0.001}}
""")
    out = subprocess.run([sys.executable, "-m", "search.cli", "scaling", str(cfg)], capture_output=True, text=True,
                         cwd=ROOT, timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((tmp_path / "searches" / name / "scaling.json").read_text()), out.stdout


@pytest.mark.slow
def test_the_study_finds_a_planted_trend_and_claims_none_without_it(toy_dir, tmp_path):
    on, stdout = _study(tmp_path, toy_dir, "study-on", -12.0, "auto")
    trend = on["trend"]["mnli"]
    assert trend["verdict"] == "diminishing" and trend["high"] < 0 and trend["stopped_because"]
    assert on["planted_slope_per_decade"] == -12.0 and "Planted truth" in stdout and "diminishing returns" in stdout
    own = on["models"][0]["params"]
    assert own < 1e6 and [m["params"] for m in on["models"][1:]] == [1e7, 1e8]  # the tiny model's own count
    # seeds: auto — 2 seeds, then one more (new searches `<name>-<model>-s2`) unless the first look answered
    assert on["sequential"] and on["level"] == pytest.approx(0.025) and trend["alpha"] == pytest.approx(0.025)
    assert on["seeds"] in (2, 3) and (on["seeds"] == 2) != (tmp_path / "searches" / "study-on-own-s2").exists()
    for m in on["models"]:
        g = m["gains"]["mnli"]
        assert g["n"] == on["seeds"] and g["low"] <= g["gain"] <= g["high"]
    assert trend["n"] == 3 * on["seeds"] and "could detect" in stdout
    import matplotlib.pyplot as plt

    assert plt.imread(on["plot"])[..., :3].std() > 0.05
    # what each trial logs and reports to Tune and Optuna is shifted as its seeds are: its validation average is
    # the mean of its seeds' (a trial of one seed, or a finalist, has only the former)
    from search.summary import trial_runs
    from trainables import names

    info = json.loads((tmp_path / "searches" / "study-on-n100m" / "search.json").read_text())
    runs = trial_runs(f"sqlite:///{tmp_path / 'm.db'}", info["experiment"], info["parent_run_id"]).values()
    assert len(runs) == 2  # the baseline and mnli
    for run in runs:
        seeds = names.seed_values(run.metrics, names.average("validation"))
        assert len(seeds) == 2 and run.metrics[names.average("validation")] == pytest.approx(
            sum(seeds.values()) / 2, abs=1e-6)
    # The same runs without the knob (every phase-3 score from the cache), at the seeds the first study used
    off, _ = _study(tmp_path, toy_dir, "study-off", 0.0, on["seeds"])
    flat = off["trend"]["mnli"]
    assert "planted_slope_per_decade" not in off and flat["verdict"] != "diminishing"
    assert trend["slope_per_decade"] == pytest.approx(flat["slope_per_decade"] - 12.0, abs=1e-6)
    for a, b in zip(on["models"], off["models"]):
        assert a["baseline"] == pytest.approx(b["baseline"])  # baselines never move
        assert a["gains"]["mnli"]["gain"] == pytest.approx(b["gains"]["mnli"]["gain"] - 12.0 * math.log10(
            a["params"] / 1e6), abs=1e-6)
    # the shift is linear in log10(params): the residuals, so the slope's standard error, are the same
    assert flat["se"] > 0 and trend["se"] == pytest.approx(flat["se"], rel=1e-6)
