"""Report pieces on planted trial tables (fast): task importance finds the task a target depends on, and the
score/cost Pareto front keeps exactly the non-dominated trials.

Run: pytest tests/test_report_units.py
"""

import numpy as np

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
