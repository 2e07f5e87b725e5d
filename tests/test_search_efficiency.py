"""The tabular search benchmark (benchmarks/search_efficiency.py) on planted grids (fast): a repeated
configuration is paid for once (the caches), an unreachable target is reported as never reached, and where the
first rungs predict the final score ASHA makes TPE cheaper; the weighted grid (weights 0 / 0.5 / 1, at most 2
tasks) has each mixture once up to scale and its space never leaves the grid; the checked-in records are well
formed.

Run: pytest tests/test_search_efficiency.py
"""

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("search_efficiency", ROOT / "benchmarks" / "search_efficiency.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # PartialFixedSampler
CANDIDATES = ["mnli", "qqp", "squad_v1", "sst2"]
EFFECT = {"mnli": 4.0, "qqp": 1.0, "squad_v1": -3.0, "sst2": 0.0}  # planted: mnli helps, squad_v1 hurts


def planted(n_rungs: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    configs = [{"mixture": {}, "intermediate_lr": None}]
    for k in range(1, 5):
        for subset in itertools.combinations(CANDIDATES, k):
            for lr in (1e-4, 1e-3):
                configs.append({"mixture": {t: 1.0 for t in subset}, "intermediate_lr": lr})
    for c in configs:
        final = 40 + sum(EFFECT[t] for t in c["mixture"]) + (0.5 if c["intermediate_lr"] == 1e-3 else 0.0)
        c["values"] = [final + rng.normal(0, 0.2) for _ in range(n_rungs - 1)] + [final]
        c["elapsed_s"] = list(np.cumsum([30.0 if c["mixture"] else 5.0] + [10.0] * (n_rungs - 1)))
        c["final"] = final
    return {"settings": {"candidates": CANDIDATES, "lrs": [1e-4, 1e-3]}, "configs": configs}


def test_a_repeated_configuration_is_paid_for_once():
    table = bench.Table(planted())
    qqp = {"use_mnli": False, "use_qqp": True, "use_squad_v1": False, "use_sst2": False, "intermediate_lr": 1e-4}
    fixed = lambda params: optuna.samplers.PartialFixedSampler(params, optuna.samplers.RandomSampler(seed=0))  # noqa: E731
    cost, n, total = bench.replay(table, fixed(qqp), asha=0, max_trials=7)
    assert cost is None and n == 7  # qqp alone never comes within 0.5 of mnli + qqp + sst2
    assert total == table.configs[table.index[table.key({"qqp": 1.0}, 1e-4)]]["elapsed_s"][-1]  # paid once, not 7x
    best = {**qqp, "use_mnli": True, "use_sst2": True, "intermediate_lr": 1e-3}
    cost, n, _ = bench.replay(table, fixed(best), asha=0, max_trials=3)
    assert n == 1 and cost == table.configs[table.index[table.key({"mnli": 1, "qqp": 1, "sst2": 1}, 1e-3)]]["elapsed_s"][-1]


@pytest.mark.slow  # seconds: the fast layer stays under a minute
def test_asha_makes_tpe_cheaper_where_early_rungs_predict_the_final_score():
    out = bench.run(planted(), seeds=20)
    s = out["strategies"]
    assert out["best"]["mixture"] == {"mnli": 1.0, "qqp": 1.0} and out["best"]["intermediate_lr"] == 1e-3
    assert all(r["reached"] == 20 for r in s.values()), s
    assert s["tpe_asha"]["median_cost"] < s["tpe"]["median_cost"], s
    assert s["random_asha"]["median_cost"] < s["random"]["median_cost"], s
    assert out["grid_cost"] == sum(c["elapsed_s"][-1] for c in planted()["configs"])


def test_the_weighted_grid_has_each_mixture_once_up_to_scale():
    five = CANDIDATES + ["ccg"]
    mixes = bench.mixtures(five, [0.5, 1.0], 2)
    assert len(mixes) == 5 + 10 * 3  # singles; per pair 1:1, 1:0.5, 0.5:1 ({a: .5, b: .5} is {a: 1, b: 1})
    assert {"mnli": 1.0, "qqp": 0.5} in mixes and {"mnli": 0.5, "qqp": 0.5} not in mixes
    assert len(bench.mixtures(five, [0.5, 1.0], None)) == 3 ** 5 - 1 - (2 ** 5 - 1)  # no cap: 211 directions
    points = bench.grid_points("weights")
    assert len(points) == 1 + 35 * 3 >= 100 and points[0] == {"mixture": {}, "intermediate_lr": None}
    assert bench.mixture_key({"mnli": 0.5, "qqp": 0.25}) == bench.mixture_key({"mnli": 1.0, "qqp": 0.5})


def weighted(seed: int = 0) -> dict:
    """A planted weighted grid: mnli at full weight with a half share of qqp is best; squad_v1 hurts."""
    rng = np.random.default_rng(seed)
    five = CANDIDATES + ["ccg"]
    configs = []
    for point in bench.grid_points("weights"):
        mix = point["mixture"]
        final = 40 + sum(EFFECT.get(t, 0.0) * w for t, w in mix.items()) + (
            2.0 if mix == {"mnli": 1.0, "qqp": 0.5} else 0.0)
        configs.append({**point, "values": [final + rng.normal(0, 0.3) for _ in range(5)] + [final],
                        "elapsed_s": [20.0, 22.0, 24.0, 26.0, 28.0, 30.0], "final": final})
    return {"settings": {"candidates": five, "lrs": bench.GRIDS["weights"]["lrs"], "weights": [0.5, 1.0],
                         "max_tasks": 2}, "configs": configs}


@pytest.mark.slow  # seconds: the fast layer stays under a minute
def test_the_weighted_space_stays_on_the_grid_and_tpe_finds_the_weighted_best():
    table = bench.Table(weighted())
    assert len(table.index) == len(table.configs) == 106
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen, first = set(), 0
    for _ in range(400):  # every point of the space is a recorded configuration with at most 2 tasks
        trial = study.ask()
        i = table.suggest(trial)
        seen.add(i)
        first += "mnli" in table.configs[i]["mixture"]
        assert len(table.configs[i]["mixture"]) <= 2
        study.tell(trial, table.configs[i]["final"])
    assert len(seen) > 80  # the space reaches most of the grid, weighted pairs included
    # the first candidate is in no more often than any other (1 - (5/6)^2 ~ 0.31 of draws), where a cap applied
    # as tasks are drawn in order would put it in half of them
    assert 0.2 < first / 400 < 0.4
    out = bench.run(weighted(), seeds=4)
    assert out["best"]["mixture"] == {"mnli": 1.0, "qqp": 0.5}
    assert out["strategies"]["tpe_asha"]["reached"] == 4


@pytest.mark.parametrize("grid", sorted(bench.GRIDS))
def test_the_recorded_grids_are_well_formed(grid):
    path = bench.GRIDS[grid]["record"]
    if not path.exists():
        pytest.skip(f"no recorded {grid} grid yet (benchmarks/search_efficiency.py --grid {grid} --record)")
    data = json.loads(path.read_text())
    table = bench.Table(data)
    assert len(table.configs) == len(bench.grid_points(grid)) == len(table.index)  # every grid point, once
    assert set(table.index) == {table.key(p["mixture"], p["intermediate_lr"]) for p in bench.grid_points(grid)}
    for c in data["configs"]:
        assert len(c["values"]) == len(c["elapsed_s"]) == table.n_rungs and c["final"] == c["values"][-1]
        assert all(b >= a for a, b in zip(c["elapsed_s"], c["elapsed_s"][1:]))


def test_planted_effects_are_each_single_task_against_the_baseline():
    data = planted()
    for c in data["configs"]:
        c["test_targets"] = {"xnli": 40 + sum(EFFECT[t] for t in c["mixture"]), "bucc2018": 80 - 5 * len(c["mixture"])}
    effects = bench.planted_effects(data["configs"])
    assert set(effects) == {f"{t} @ {lr:g}" for t in CANDIDATES for lr in (1e-4, 1e-3)}  # single tasks only
    assert effects["mnli @ 0.0001"] == {"xnli": 4.0, "bucc2018": -5.0, "validation_average": 4.0}
    assert effects["squad_v1 @ 0.001"]["xnli"] == -3.0 and effects["squad_v1 @ 0.001"]["validation_average"] == -2.5
