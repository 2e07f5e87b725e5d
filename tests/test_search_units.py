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
from search.space import TrialSpec, define_space
from search.tuner import PrunedOptunaSearch
from trainables.cache import Cache
from trainables.config import load_config
from trainables.errors import XstiltsError

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


def test_space_spec_and_config_round_trip():
    """Optuna parameters -> TrialSpec -> PipelineConfig by typed update: every value arrives as sampled (a float
    like 1e-05 never passes through a string), and a spec survives the trip back to parameters."""
    cfg = load_search_config(ROOT / "configs/search/toy.yaml", ["temperature={low: 0.5, high: 4.0}",
                                                                 "target_lr={low: 1.0e-5, high: 1.0e-3}"])
    base = load_config(ROOT / cfg.pipeline, list(cfg.overrides))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(10):
        trial = study.ask()
        const = define_space(trial, cfg)
        params = {**trial.params, **const}
        spec = TrialSpec.from_params(params, cfg.candidates, seed=7)
        assert set(spec.mixture) == {t for t in cfg.candidates if params[f"use_{t}"]}
        pcfg = spec.pipeline_config(base)
        assert pcfg.intermediate.mixture == dict(spec.mixture) and pcfg.seed == 7
        assert pcfg.intermediate.lr == params["intermediate_lr"] and pcfg.target.lr == params["target_lr"]
        assert pcfg.intermediate.temperature == params["temperature"]
        assert pcfg.target.epochs == base.target.epochs  # untouched settings stay the preset's
        assert TrialSpec.from_params(spec.to_params(cfg.candidates), cfg.candidates, seed=7) == spec
        study.tell(trial, 0.0)
    assert TrialSpec({"mnli": 1.0}).to_params(["mnli", "qqp"]) == {"use_mnli": True, "use_qqp": False, "w_mnli": 1.0}


def test_a_bad_spec_is_refused_by_the_pipeline_config():
    base = load_config(ROOT / "configs/pipeline/toy.yaml")
    with pytest.raises(XstiltsError, match="intermediate.lr: Input should be greater than 0"):
        TrialSpec({"mnli": 1.0}, intermediate_lr=-1.0).pipeline_config(base)


def _searcher(storage, max_t=3):
    cfg = load_search_config(None, ["candidates=[mnli,qqp]"])
    s = PrunedOptunaSearch(lambda t: define_space(t, cfg), metric="validation/average", mode="max", max_t=max_t,
                           storage=optuna.storages.RDBStorage(storage), study_name="s",
                           sampler=optuna.samplers.RandomSampler(seed=0))
    return s


def test_scheduler_stopped_trials_reach_optuna_as_pruned(tmp_path):
    s = _searcher(f"sqlite:///{tmp_path}/o.db")
    s.suggest("a"), s.suggest("b")
    s.on_trial_result("a", {"validation/average": 10.0, "training_iteration": 1})
    s.on_trial_complete("a", {"validation/average": 10.0, "training_iteration": 1})  # stopped at rung 1 of 3
    for it in (1, 2, 3):
        s.on_trial_result("b", {"validation/average": 20.0 + it, "training_iteration": it})
    s.on_trial_complete("b", {"validation/average": 23.0, "training_iteration": 3})
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
    fresh.on_trial_complete("t9", {"validation/average": 5.0, "training_iteration": 3})
    study = optuna.load_study(study_name="s", storage=storage)
    assert [(t.number, t.state) for t in study.trials] == [(0, TrialState.COMPLETE)]


def test_truncated_cache_entry_is_detected(tmp_path):
    entry = Cache(tmp_path).entry("phase2", {"x": 1})
    path, meta, hit = entry.get_or_build(lambda tmp: (tmp / "model.safetensors").write_bytes(b"x" * 100) and {"n": 1})
    assert not hit and meta == {"n": 1} and entry.valid()
    (path / "model.safetensors").write_bytes(b"x" * 40)  # truncated
    assert not entry.valid()
    (path / "xstilts-manifest.json").write_text("{not json")
    assert not entry.valid()
    shutil.rmtree(path)
    assert not entry.valid()
