"""Search pieces without a Ray cluster: the space, PRUNED bookkeeping, zombie adoption, the phase-2 cache.

Run: pytest tests/test_search_units.py
"""

import json
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.config import load_search_config
from search.space import define_space, mixture_of, point_params, trial_overrides
from search.tuner import PrunedOptunaSearch
from trainables.config import load_config
from trainables.errors import XstiltsError
from trainables.phase2 import valid_entry

ROOT = Path(__file__).resolve().parents[1]
SEARCH_PRESETS = sorted((ROOT / "configs" / "search").rglob("*.yaml"))


@pytest.mark.parametrize("path", SEARCH_PRESETS, ids=lambda p: p.name)
def test_every_search_preset_loads_and_its_pipeline_too(path):
    if path.name.startswith("scaling"):  # a scaling study: one search per model
        from search.scaling import _search_cfg, load_scaling_config

        study = load_scaling_config(path)
        configs = [_search_cfg(study, m) for m in study.models]
        assert len(configs) >= 2
    else:
        configs = [load_search_config(path)]
    for cfg in configs:
        load_config(ROOT / cfg.pipeline, cfg.overrides)
    assert path.read_text().startswith("#")


def test_bad_search_configs():
    with pytest.raises(XstiltsError, match="unknown intermediate task 'mnlx'"):
        load_search_config(None, ["candidates=[mnli,mnlx]"])
    with pytest.raises(XstiltsError, match="points_to_evaluate: 'qqp' is not a candidate"):
        load_search_config(None, ["candidates=[mnli]", "points_to_evaluate=[{qqp: 1.0}]"])
    with pytest.raises(XstiltsError, match="low 2.0 > high 1.0"):
        load_search_config(None, ["weight={low: 2.0, high: 1.0}"])


def test_space_and_overrides_round_trip():
    cfg = load_search_config(ROOT / "configs/search/toy.yaml")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(10):
        trial = study.ask()
        const = define_space(trial, cfg)
        params = {**trial.params, **const}
        mix = mixture_of(params, cfg.candidates)
        assert set(mix) == {t for t in cfg.candidates if params[f"use_{t}"]}
        overrides = trial_overrides(params, cfg.candidates)
        pcfg = load_config(ROOT / cfg.pipeline, list(cfg.overrides) + overrides)
        assert pcfg.intermediate.mixture == mix and pcfg.intermediate.lr == params["intermediate_lr"]
        study.tell(trial, 0.0)
    assert point_params({"mnli": 1.0}, ["mnli", "qqp"]) == {"use_mnli": True, "use_qqp": False, "w_mnli": 1.0}


def _searcher(storage, max_t=3):
    cfg = load_search_config(None, ["candidates=[mnli,qqp]"])
    s = PrunedOptunaSearch(lambda t: define_space(t, cfg), metric="validation/xtreme", mode="max", max_t=max_t,
                           storage=optuna.storages.RDBStorage(storage), study_name="s",
                           sampler=optuna.samplers.RandomSampler(seed=0))
    return s


def test_scheduler_stopped_trials_reach_optuna_as_pruned(tmp_path):
    s = _searcher(f"sqlite:///{tmp_path}/o.db")
    s.suggest("a"), s.suggest("b")
    s.on_trial_result("a", {"validation/xtreme": 10.0, "training_iteration": 1})
    s.on_trial_complete("a", {"validation/xtreme": 10.0, "training_iteration": 1})  # stopped at rung 1 of 3
    for it in (1, 2, 3):
        s.on_trial_result("b", {"validation/xtreme": 20.0 + it, "training_iteration": it})
    s.on_trial_complete("b", {"validation/xtreme": 23.0, "training_iteration": 3})
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/o.db")
    states = {t.number: (t.state, t.value) for t in study.trials}
    assert states == {0: (TrialState.PRUNED, 10.0), 1: (TrialState.COMPLETE, 23.0)}  # pruned: last rung value


def test_trials_left_running_by_a_crash_are_taken_up_again(tmp_path):
    storage = f"sqlite:///{tmp_path}/o.db"
    crashed = _searcher(storage)
    params = crashed.suggest("t1")  # asked, then the driver died: RUNNING forever in storage
    fresh = _searcher(storage)
    again = fresh.suggest("t9")
    assert again == params
    fresh.on_trial_complete("t9", {"validation/xtreme": 5.0, "training_iteration": 3})
    study = optuna.load_study(study_name="s", storage=storage)
    assert [(t.number, t.state) for t in study.trials] == [(0, TrialState.COMPLETE)]


def test_truncated_cache_entry_is_detected(tmp_path):
    entry = tmp_path / "phase2-x"
    entry.mkdir()
    (entry / "model.safetensors").write_bytes(b"x" * 100)
    (entry / "xstilts-manifest.json").write_text(json.dumps({"files": {"model.safetensors": 100}, "summary": {}}))
    assert valid_entry(entry)
    (entry / "model.safetensors").write_bytes(b"x" * 40)  # truncated
    assert not valid_entry(entry)
    (entry / "xstilts-manifest.json").write_text("{not json")
    assert not valid_entry(entry)
    shutil.rmtree(entry)
    assert not valid_entry(entry)
