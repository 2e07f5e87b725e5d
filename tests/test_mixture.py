"""The mixture value and jiant's samplers: exact probabilities and a seeded stream.

Run: pytest tests/test_mixture.py
"""

from collections import Counter
from itertools import islice

import pytest

from trainables.errors import XstiltsError
from trainables.mixture import Mixture

SIZES = {"mnli": 900, "qqp": 100, "sst2": 400}


def test_explicit_weights_normalise_and_zero_is_never_sampled():
    m = Mixture({"mnli": 3.0, "qqp": 1.0, "sst2": 0.0})
    assert m.probabilities() == {"mnli": 0.75, "qqp": 0.25}
    assert "sst2" not in set(islice(m.stream(0), 500))


@pytest.mark.parametrize("sampler, cap, temperature, expected", [
    ("proportional", None, 1.0, {"mnli": 0.64285714, "qqp": 0.07142857, "sst2": 0.28571429}),
    ("capped", 400, 1.0, {"mnli": 0.44444444, "qqp": 0.11111111, "sst2": 0.44444444}),
    ("temperature", None, 2.0, {"mnli": 30 / 60, "qqp": 10 / 60, "sst2": 20 / 60}),  # sqrt: 30, 10, 20
    ("uniform", None, 1.0, {"mnli": 1 / 3, "qqp": 1 / 3, "sst2": 1 / 3}),
])
def test_size_based_samplers(sampler, cap, temperature, expected):
    m = Mixture({k: 1.0 for k in SIZES}, sampler, temperature, cap)
    assert m.probabilities(SIZES) == pytest.approx(expected, abs=1e-7)


def test_stream_is_seeded_and_follows_probabilities():
    m = Mixture({"mnli": 3.0, "qqp": 1.0})
    a, b = list(islice(m.stream(7), 4000)), list(islice(m.stream(7), 4000))
    assert a == b and a != list(islice(m.stream(8), 4000))
    assert Counter(a)["mnli"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_empty_mixture_is_the_baseline():
    assert Mixture({}).is_empty() and Mixture({"mnli": 0.0}).is_empty()
    assert Mixture({}).probabilities() == {}


def test_negative_weights_rejected():
    with pytest.raises(XstiltsError, match="negative"):
        Mixture({"mnli": -1.0, "qqp": 2.0}).probabilities()
