"""Report pieces on planted trial tables (fast): task importance finds the task a target depends on, and the
score/cost Pareto front keeps exactly the non-dominated trials.

Run: pytest tests/test_report_units.py
"""

import numpy as np
import pytest

from search.report import pareto_front, task_importance


def _trials(n: int = 24, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        mix = {t: float(rng.uniform()) for t in ("mnli", "qqp", "sst2") if rng.uniform() < 0.7}
        xnli = 40 + 20 * mix.get("mnli", 0.0) + rng.normal(0, 0.3)  # planted: XNLI follows MNLI only
        pawsx = 50 + 15 * mix.get("qqp", 0.0) + rng.normal(0, 0.3)  # PAWS-X follows QQP only
        out.append({"trial": str(i), "mixture": mix, "targets": {"xnli": xnli, "pawsx": pawsx},
                    "average": (xnli + pawsx) / 2, "cpu_hours": 0.1 + rng.uniform(), "gpu_hours": 0.0})
    return out


@pytest.mark.slow  # seconds: the fast layer stays under a minute
def test_importance_finds_the_planted_task_per_target():
    shares = task_importance(_trials(), ["xnli", "pawsx"])
    assert max(shares["xnli"], key=shares["xnli"].get) == "mnli" and shares["xnli"]["mnli"] > 0.6, shares
    assert max(shares["pawsx"], key=shares["pawsx"].get) == "qqp" and shares["pawsx"]["qqp"] > 0.6, shares
    assert shares["xnli"]["sst2"] < 0.2 and shares["pawsx"]["sst2"] < 0.2  # the neutral task explains little
    assert task_importance(_trials(3), ["xnli"]) == {}  # too few trials to say anything


def test_pareto_front_is_the_non_dominated_set():
    trials = _trials(30, seed=1)
    front = pareto_front(trials, "cpu_hours")
    ids = {p["trial"] for p in front}
    for t in trials:
        dominated = any(o["average"] >= t["average"] and o["cpu_hours"] <= t["cpu_hours"]
                        and (o["average"], o["cpu_hours"]) != (t["average"], t["cpu_hours"]) for o in trials)
        assert (t["trial"] in ids) == (not dominated), t
    assert [p["cpu_hours"] for p in front] == sorted(p["cpu_hours"] for p in front)


def _run(n: int, mix: dict, val: dict, test: dict):
    from trainables import names
    from trainables.tracking import RunRecord

    metrics = {names.average("validation"): sum(val.values()) / len(val), names.average("test"): sum(test.values()) / len(test)}
    metrics.update({names.target_score(t, "validation"): v for t, v in val.items()})
    metrics.update({names.target_score(t, "test"): v for t, v in test.items()})
    return RunRecord(f"r{n}", "FINISHED", params={names.mix_param(t): str(p) for t, p in mix.items()},
                     metrics=metrics, tags={"optuna.trial": str(n)})


def test_report_on_test_selects_on_validation():
    """`xstilts report --split test` reports test scores of trials chosen on validation: the best trial per
    mixture and the best model per target; a target with only a test split (Tatoeba) is chosen by the validation
    average. Test scores that would win on their own must not (before: picked by test)."""
    from search.report import _trial_rows, build_rows

    runs = [_run(0, {}, {"xnli": 50, "pawsx": 60}, {"xnli": 48, "pawsx": 58, "tatoeba": 70}),
            # mnli at two learning rates: trial 1 wins on validation, trial 2 on test
            _run(1, {"mnli": 1.0}, {"xnli": 60, "pawsx": 61}, {"xnli": 55, "pawsx": 57, "tatoeba": 60}),
            _run(2, {"mnli": 1.0}, {"xnli": 52, "pawsx": 59}, {"xnli": 70, "pawsx": 75, "tatoeba": 90}),
            _run(3, {"qqp": 1.0}, {"xnli": 49, "pawsx": 66}, {"xnli": 47, "pawsx": 63, "tatoeba": 65})]
    report = build_rows(_trial_rows(runs, "test"))
    rows = {r["label"]: r for r in report["rows"]}
    assert rows["mnli"]["trial"] == "1" and rows["mnli"]["targets"]["xnli"] == 55  # chosen on validation
    assert report["best_per_target"] == {"xnli": "mnli", "pawsx": "qqp", "tatoeba": "mnli"}
    # mnli has the best validation average (60.5): Tatoeba's pick; reported with its test score
    assert report["best_per_target_average"] == (55 + 63 + 60) / 3
    on_validation = build_rows(_trial_rows(runs, "validation"))
    assert {r["label"]: r["trial"] for r in on_validation["rows"]} == {"baseline": "0", "mnli": "1", "qqp": "3"}
