"""The scaling study's statistics (search/slope.py) on simulated studies with a known truth: the slope is
recovered, a flat truth is claimed as a trend at the rate the interval allows (one look, and when seeds are added
until an answer), and the detectable slope is what the study finds 80 % of the time. The toy study end to end:
tests/test_planted.py (a study with a planted answer).

Run: pytest tests/test_slope.py
"""

import math

import numpy as np
import pytest
from scipy.stats import t as student

from search.slope import looks, sequential, slope_test

SIZES = (6.3, 7.0, 7.5)  # log10 parameters of three models


def _study(rng, truth: float, sd: float, seeds: int, sizes=SIZES) -> dict:
    return {x: {s: truth * x + rng.normal(0, sd) for s in range(seeds)} for x in sizes}


def test_the_slope_and_its_interval_on_a_known_line():
    rng = np.random.default_rng(0)
    test = slope_test(_study(rng, -2.0, 0.3, 6))
    assert test["low"] < -2.0 < test["high"] and test["verdict"] == "diminishing" and test["df"] == 18 - 2
    assert test["slope_per_decade"] == pytest.approx(-2.0, abs=0.5)
    # least squares by hand: the slope of the 18 (x, gain) pairs
    data = _study(np.random.default_rng(0), -2.0, 0.3, 6)
    xs = [x for x, per in data.items() for _ in per]
    ys = [g for per in data.values() for g in per.values()]
    assert test["slope_per_decade"] == pytest.approx(np.polyfit(xs, ys, 1)[0])
    # one model size, or too few gains: no trend claimed
    assert slope_test({7.0: {0: 1.0, 1: 2.0}})["verdict"] == "inconclusive"
    assert math.isnan(slope_test({6.0: {0: 1.0}, 7.0: {0: 2.0}})["slope_per_decade"])


def test_a_flat_truth_is_claimed_at_the_rate_the_interval_allows():
    rng = np.random.default_rng(1)
    claims = [slope_test(_study(rng, 0.0, 1.0, 3))["verdict"] != "inconclusive" for _ in range(3000)]
    assert 0.035 < np.mean(claims) < 0.065  # 5 % (binomial sd 0.4 %)


def test_the_detectable_slope_is_found_eighty_percent_of_the_time():
    rng = np.random.default_rng(2)
    seeds, sd = 3, 1.0
    x = np.repeat(SIZES, seeds)
    se = sd / math.sqrt(((x - x.mean()) ** 2).sum())
    df = len(x) - 2
    mde = (student.ppf(0.975, df) + student.ppf(0.8, df)) * se  # the design's detectable slope
    found = [slope_test(_study(rng, -mde, sd, seeds))["verdict"] == "diminishing" for _ in range(2000)]
    assert 0.72 < np.mean(found) < 0.86
    reported = [slope_test(_study(rng, 0.0, sd, seeds))["detectable"] for _ in range(500)]
    assert np.median(reported) == pytest.approx(mde, rel=0.15)  # what a study reports estimates it


def _collect(rng, truth, sd, calls=None):
    def collect(new):
        if calls is not None:
            calls.append(list(new))
        return {"mix": {x: {s: truth * x + rng.normal(0, sd) for s in new} for x in SIZES}}
    return collect


def test_adding_seeds_until_an_answer_keeps_the_false_claim_rate():
    """Looking after every round at 5 %/looks: the whole sequential study claims a flat trend at most 5 % of the
    time (one look per round at a plain 5 % would claim it more often)."""
    rng = np.random.default_rng(3)
    claims, used = [], []
    for _ in range(600):
        tests, seeds = sequential(_collect(rng, 0.0, 1.0), start=3, step=2, most=11, min_effect=0.3)
        claims.append(tests["mix"]["verdict"] != "inconclusive")
        used.append(len(seeds))
    assert np.mean(claims) < 0.065 and max(used) == 11


def test_seeds_are_added_only_until_the_question_is_answered():
    rng = np.random.default_rng(4)
    calls = []
    tests, seeds = sequential(_collect(rng, -4.0, 0.5, calls), start=3, step=2, most=11, min_effect=0.3)
    assert seeds == [0, 1, 2] and calls == [[0, 1, 2]]  # a clear trend: one round
    assert tests["mix"]["stopped_because"] == "interval excludes zero" and tests["mix"]["verdict"] == "diminishing"
    calls = []
    tests, seeds = sequential(_collect(rng, 0.0, 0.05, calls), start=3, step=2, most=11, min_effect=0.3)
    assert tests["mix"]["stopped_because"].startswith("detectable slope below") and len(seeds) < 11
    calls = []
    tests, seeds = sequential(_collect(rng, 0.0, 3.0, calls), start=3, step=2, most=8, min_effect=0.01)
    assert calls == [[0, 1, 2], [3, 4], [5, 6], [7]] and seeds == list(range(8))  # the budget, exactly
    assert tests["mix"]["stopped_because"] == "seed budget spent (8)" and looks(3, 2, 8) == 4
    assert tests["mix"]["alpha"] == pytest.approx(0.05 / 4)


def test_scaling_config_seeds():
    from search.scaling import load_scaling_config
    from trainables.errors import XstiltsError

    with pytest.raises(XstiltsError, match="seeds: at least 2"):
        load_scaling_config("scaling_toy", ["seeds=1"])
    cfg = load_scaling_config("scaling_toy", ["seeds=auto", "auto={start: 2, step: 1, most: 4}"])
    assert cfg.seeds == "auto" and cfg.auto.most == 4
