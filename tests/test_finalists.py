"""Test work only for finalists (issue: GPU-hours): which work trials defer, that the fine-tuned targets a
finalist re-runs are cache hits (same phase-3 key), who the finalists are, and how `xstilts plan` prices it.
The search end to end with finalists: tests/test_search.py::test_toy_search_end_to_end.

Run: pytest tests/test_finalists.py
"""

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.config import SearchConfig, load_search_config
from search.finalists import choose
from trainables.config import load_config, update
from trainables.rungs import deferred, run_targets, target_splits

ROOT = Path(__file__).resolve().parents[1]


def _cfg(*extra):
    return load_config(ROOT / "configs/pipeline/toy.yaml", ["tracking.enabled=false", *extra])


def test_trials_defer_only_test_work_that_needs_a_computation_of_its_own():
    full = _cfg()
    trial = update(full, {"defer_test": True})
    got = {t: target_splits(trial, t) for t in full.targets}
    # fine-tuned targets with a dev set keep test: the model is in memory; XQuAD shares MLQA's SQuAD fine-tune
    assert got["xnli"] == got["pawsx"] == got["udpos"] == got["panx"] == got["mlqa"] == ["validation", "test"]
    assert got["xquad"] == ["test"]
    # BUCC mines its dev set (objective) but not its test corpora; Tatoeba embeds only for test; TyDiQA's own
    # fine-tune serves only test
    assert got["bucc2018"] == ["validation"] and got["tatoeba"] == [] and got["tydiqa"] == []
    assert deferred(trial) == ["tydiqa", "bucc2018", "tatoeba"] and deferred(full) == []
    assert run_targets(trial) == ["xnli", "pawsx", "udpos", "panx", "mlqa", "bucc2018", "xquad"]
    assert run_targets(full)[-3:] == ["tatoeba", "xquad", "tydiqa"] and len(run_targets(full)) == 9
    # XQuAD without MLQA would need a SQuAD fine-tune of its own: deferred too
    alone = update(trial, {"targets": ["xnli", "xquad"]})
    assert target_splits(alone, "xquad") == [] and run_targets(alone) == ["xnli"]
    # nothing is deferred from a run that evaluates no test split
    val = update(trial, {"eval_splits": ["validation"]})
    assert deferred(val) == [] and target_splits(val, "xnli") == ["validation"]


def test_a_finalist_finds_the_trials_fine_tunes_in_the_cache(toy_dir, tmp_path):
    """The phase-3 key of a target a trial fine-tuned is the finalist's (so its fine-tune is not paid twice);
    BUCC's is not (the trial mined dev only)."""
    import torch

    from trainables.pipeline import phase3_entry

    full = _cfg(f"data_dir={toy_dir}", f"cache_dir={tmp_path}")
    trial = update(full, {"defer_test": True})
    enc, cpu = tmp_path / "encoder", torch.device("cpu")
    enc.mkdir()
    key = lambda cfg, t: phase3_entry(cfg, t, enc, Path(toy_dir), cpu).key
    for t in ("xnli", "mlqa", "xquad", "panx"):
        assert key(trial, t) == key(full, t), t
    assert key(trial, "bucc2018") != key(full, "bucc2018")


def _study(values: dict[int, float | None]) -> optuna.Study:
    """A real study: trial number -> validation average (None: pruned)."""
    study = optuna.create_study(direction="maximize")
    dist = {"w": FloatDistribution(0.0, 1.0)}
    for n in range(len(values)):
        v = values[n]
        study.add_trial(create_trial(params={"w": 0.5}, distributions=dist, value=v,
                                     state=TrialState.COMPLETE if v is not None else TrialState.PRUNED))
    return study


def test_finalists_are_the_seeded_points_and_the_best_others_by_validation():
    cfg = SearchConfig(points_to_evaluate=[{}, {"mnli": 1.0}], finalists=2, num_samples=8)
    study = _study({0: 50.0, 1: None, 2: 51.0, 3: 60.0, 4: None, 5: 55.0, 6: 60.0, 7: 10.0})
    # seeded 0 (seeded 1 was stopped: no scores to report), then 3 and 6 (tied: lower number first), not 5
    assert choose(cfg, study) == [0, 3, 6]
    assert choose(cfg.model_copy(update={"finalists": 0}), study) == [0]


def test_trials_defer_only_when_some_trial_is_no_finalist():
    base = load_search_config(ROOT / "configs/search/toy.yaml")  # 8 trials, 2 seeded, finalists 3
    assert base.defers_test
    assert not base.model_copy(update={"num_samples": 5}).defers_test  # 2 + 3 = every trial
    assert not base.model_copy(update={"finalists": None}).defers_test
    assert not load_search_config(ROOT / "configs/search/paper.yaml").defers_test  # a grid: every point seeded
    from search.tuner import base_config, trial_context

    ctx = lambda cfg: trial_context(cfg, base_config(cfg), None)
    assert ctx(base).base.defer_test and not ctx(base.model_copy(update={"finalists": None})).base.defer_test
    assert not base_config(base).defer_test  # export, scaling, preflight: the full configuration


def test_plan_prices_deferred_work_once_per_finalist():
    """`xstilts plan`: with finalists, the deferred targets cost one finalist's work x the finalists; the targets
    trials still compute cost what they cost without finalists (XLM-R Large, the mixture search, table sizes)."""
    from search.price import price

    scfg = load_search_config(ROOT / "configs/search/mixture.yaml")
    seeded, free = len(scfg.points_to_evaluate), scfg.num_samples - len(scfg.points_to_evaluate)
    on, off = price(scfg, 8, "h100"), price(scfg.model_copy(update={"finalists": None}), 8, "h100")
    assert on["assumptions"]["finalists"] == seeded + 3 and off["assumptions"]["finalists"] == 0
    assert on["assumptions"]["deferred_to_finalists"] == ["tydiqa", "bucc2018", "tatoeba"]
    assert "tatoeba" not in on["assumptions"]["rungs"] and "tatoeba" in off["assumptions"]["rungs"]
    assert on["breakdown"]["phase2"] == off["breakdown"]["phase2"]
    assert on["breakdown"]["phase3"]["xnli"] == off["breakdown"]["phase3"]["xnli"]  # its rung is first either way
    # TyDiQA's fine-tune: every seeded trial paid it before, free trials by how often they reach its (last) rung;
    # now exactly the finalists do
    one = on["breakdown"]["phase3"]["tydiqa"] / (seeded + 3)
    reach = off["assumptions"]["free_trial_reaches_rung"][-1]
    assert one > 0 and off["breakdown"]["phase3"]["tydiqa"] == pytest.approx(one * (seeded + free * reach), abs=2e-3)
