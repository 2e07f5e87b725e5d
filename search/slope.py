"""Does the gain change with model size, and could the study have seen it? The statistics of `xstilts scaling`.

Data: per model (x = log10 parameters) the paired gains of one configuration over the same model's baseline, one
per seed. The slope of gain against x is the least-squares line through every paired gain (so more seeds on a
model weigh more), with its standard error from the residuals (df = gains - 2; a trend that is not linear in x
inflates the residuals: conservative) and a two-sided t-interval. Next to it, the smallest slope the study had
80 % power to detect at the same level: (t_{1-a/2, df} + t_{power, df}) x SE — what a null result is worth.

Adding seeds until an answer comes (`seeds: auto`) looks at the data several times, and each look at level a
would claim a trend more often than a: every look uses a / (planned looks) (Bonferroni), so the whole sequential
study claims a trend that is not there at most a of the time. It stops a configuration once its interval excludes
zero, or once the detectable slope falls below `min_effect` (a trend that small would not matter), or when the
seed budget is spent.

  python -m search.slope    (simulated studies with a known truth: false-claim rate and power, in seconds)
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

ALPHA, POWER = 0.05, 0.8


def slope_test(gains: Mapping[float, Mapping[int, float]], alpha: float = ALPHA, power: float = POWER) -> dict:
    """`gains`: log10 parameters -> seed -> paired gain (points). Returns slope per decade, its interval at level
    `alpha`, SE, df, the detectable slope at `power`, and the verdict (`diminishing` | `growing` | `inconclusive`)."""
    from scipy.stats import t

    xs = np.array([x for x, per in gains.items() for _ in per], dtype=float)
    ys = np.array([g for per in gains.values() for g in per.values()], dtype=float)
    n, df = len(ys), len(ys) - 2
    if len({float(x) for x in gains}) < 2 or df < 1:
        return {"slope_per_decade": float("nan"), "low": float("nan"), "high": float("nan"), "se": float("nan"),
                "df": max(df, 0), "n": n, "alpha": alpha, "detectable": float("nan"), "verdict": "inconclusive"}
    sxx = float(((xs - xs.mean()) ** 2).sum())
    slope = float(((xs - xs.mean()) * (ys - ys.mean())).sum() / sxx)
    resid = ys - (ys.mean() + slope * (xs - xs.mean()))
    se = math.sqrt(float((resid ** 2).sum()) / df / sxx)
    crit = float(t.ppf(1 - alpha / 2, df))
    low, high = slope - crit * se, slope + crit * se
    verdict = "diminishing" if high < 0 else "growing" if low > 0 else "inconclusive"
    return {"slope_per_decade": slope, "low": low, "high": high, "se": se, "df": df, "n": n, "alpha": alpha,
            "detectable": (crit + float(t.ppf(power, df))) * se, "verdict": verdict}


def looks(start: int, step: int, most: int) -> int:
    """How many times a sequential study may look: at `start` seeds, then every `step` more up to `most`."""
    return 1 + max(0, math.ceil((most - start) / step))


def sequential(collect: Callable[[list[int]], dict[str, dict[float, dict[int, float]]]], start: int, step: int,
               most: int, min_effect: float, alpha: float = ALPHA) -> tuple[dict[str, dict], list[int]]:
    """Add seeds (`collect(new seeds)` -> configuration -> log10 params -> seed -> gain, for those seeds) until
    every configuration is decided: its interval (at alpha / looks) excludes zero, or its detectable slope is
    below `min_effect`, or `most` seeds are used. Returns (configuration -> slope_test with `stopped_because`, the
    seeds used)."""
    level = alpha / looks(start, step, most)
    data: dict[str, dict[float, dict[int, float]]] = {}
    seeds: list[int] = []
    new = list(range(start))
    while True:
        for label, per_model in collect(new).items():
            for x, per_seed in per_model.items():
                data.setdefault(label, {}).setdefault(x, {}).update(per_seed)
        seeds += new
        tests = {label: slope_test(d, alpha=level) for label, d in data.items()}
        for test in tests.values():
            test["stopped_because"] = ("interval excludes zero" if test["verdict"] != "inconclusive" else
                                       f"detectable slope below min_effect {min_effect}"
                                       if test["detectable"] < min_effect else None)
        if all(t["stopped_because"] for t in tests.values()) or len(seeds) >= most:
            for test in tests.values():
                test["stopped_because"] = test["stopped_because"] or f"seed budget spent ({most})"
            return tests, seeds
        new = list(range(len(seeds), min(most, len(seeds) + step)))


def simulate(truth: float, sd: float, sizes: tuple[float, ...], start: int, step: int, most: int,
             min_effect: float, studies: int, seed: int = 0) -> dict:
    """Studies whose paired gains are `truth` x log10(params) + noise(sd): how often the sequential procedure
    claims a trend (`claims`), and how many seeds it used (median)."""
    rng = np.random.default_rng(seed)
    claims, used = 0, []
    for _ in range(studies):
        def collect(new):
            return {"c": {x: {s: truth * x + rng.normal(0, sd) for s in new} for x in sizes}}
        tests, seeds = sequential(collect, start, step, most, min_effect)
        claims += tests["c"]["verdict"] != "inconclusive"
        used.append(len(seeds))
    return {"truth": truth, "claims": claims / studies, "median_seeds": float(np.median(used)), "studies": studies}


if __name__ == "__main__":
    sizes = (np.log10(2e6), np.log10(9e6), np.log10(3e7))  # the toy study's sizes
    for truth in (0.0, -1.0, -3.0):
        print(simulate(truth, sd=1.0, sizes=sizes, start=3, step=2, most=15, min_effect=0.5, studies=400))
