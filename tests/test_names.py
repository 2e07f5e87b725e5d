"""Metric and parameter names: every name the project builds parses back to what built it.

Run: pytest tests/test_names.py
"""

import pytest

from trainables import names
from trainables.pipeline import summarise
from trainables.tracking import RunRecord, flatten_results


@pytest.mark.parametrize("split", ["validation", "test"])
def test_built_names_parse_back(split):
    assert names.parse_metric(names.average(split)) == names.MetricName("average", split)
    assert names.parse_metric(names.xtreme(split)) == names.MetricName("xtreme", split)
    assert names.parse_metric(names.target_score("xnli", split)) == names.MetricName("score", split, target="xnli")
    assert names.parse_metric(names.language_metric("mlqa", "de", "f1", split)) == names.MetricName(
        "language", split, target="mlqa", lang="de", metric="f1")
    assert names.parse_metric(names.category("qa", split)) == names.MetricName("category", split, metric="qa")
    seed = names.parse_metric(names.seed_metric(3, names.average(split)))
    assert (seed.kind, seed.seed, seed.rest) == ("seed", 3, names.average(split))
    assert names.parse_metric("cost/gpu_hours").kind == "other"


def test_the_objective_is_the_validation_average():
    assert names.OBJECTIVE == names.average("validation")


def test_flattened_results_read_back_per_split():
    per_target = {"xnli": {"validation": {"en": {"accuracy": 80.0}, "de": {"accuracy": 70.0}},
                           "test": {"en": {"accuracy": 60.0}}},
                  "mlqa": {"validation": {"de": {"exact_match": 40.0, "f1": 60.0}}}}
    flat = {**flatten_results(summarise(per_target, "validation"), "validation"),
            **flatten_results(summarise(per_target, "test"), "test")}
    assert names.target_scores(flat, "validation") == {"xnli": 75.0, "mlqa": 50.0}
    assert names.target_scores(flat, "test") == {"xnli": 60.0}
    assert flat["validation/average"] == 62.5 and "validation/xtreme" not in flat  # two targets: no XTREME
    run = RunRecord("r", "FINISHED", params={"mix/mnli": "0.75", "mix/qqp": "0.25", "mix/sst2": "0.0",
                                             "weight/mnli": "3.0"}, metrics=flat)
    assert run.mixture() == {"mnli": 0.75, "qqp": 0.25}
