"""Official XTREME metrics on golden inputs whose right answers are known independently.

Run: pytest tests/test_metrics.py
"""

import numpy as np
import pytest

from trainables import metrics

# XLM-R Large's published per-task test numbers (reference/paper.md §0, §3.2) -> XTREME 68.25.
XLMR_LARGE = {
    "xnli": {"accuracy": 79.2}, "udpos": {"f1": 73.8}, "panx": {"f1": 65.4}, "pawsx": {"accuracy": 86.4},
    "xquad": {"exact_match": 60.8, "f1": 76.6}, "mlqa": {"exact_match": 53.2, "f1": 71.6},
    "tydiqa": {"exact_match": 45.0, "f1": 65.1}, "bucc2018": {"f1": 66.0}, "tatoeba": {"accuracy": 57.3},
}


def test_xtreme_golden_68_25():
    out = metrics.xtreme_score({t: {"en": m} for t, m in XLMR_LARGE.items()})
    assert out["xtreme"] == pytest.approx(68.25, abs=1e-9) and out["average"] == out["xtreme"]
    assert out["tasks"]["xquad"] == pytest.approx(68.7) and out["tasks"]["tydiqa"] == pytest.approx(55.05)
    assert out["categories"]["qa"] == pytest.approx((68.7 + 62.4 + 55.05) / 3)


def test_xtreme_only_for_all_nine_targets():
    """evaluate.py reports the overall score only when every task is present; fewer is an average of k."""
    partial = {t: {"en": m} for t, m in XLMR_LARGE.items() if t != "tatoeba"}
    out = metrics.xtreme_score(partial)
    assert out["xtreme"] is None
    assert out["average"] == pytest.approx((68.25 * 9 - 57.3) / 8)
    assert "retrieval" not in out["categories"] and set(out["categories"]) == {"classification", "tagging", "qa"}


def test_task_score_is_mean_over_languages_then_em_f1():
    langs = {"en": {"exact_match": 60.0, "f1": 80.0}, "de": {"exact_match": 40.0, "f1": 50.0}}
    assert metrics.task_score("xquad", langs) == pytest.approx((50.0 + 65.0) / 2)


@pytest.mark.parametrize("pred, golds, em, f1", [
    ("The Cat!", ["cat"], 100.0, 100.0),                    # case, article, punctuation
    ("the cat sat", ["a cat sat down"], 0.0, 80.0),          # P=1, R=2/3
    ("  cat   sat ", ["cat sat"], 100.0, 100.0),              # whitespace
    ("dog", ["cat", "dog"], 100.0, 100.0),                   # best over golds
    ("an apple", ["the pear"], 0.0, 0.0),
])
def test_squad_normalisation(pred, golds, em, f1):
    got = metrics.squad_em_f1({"q": pred}, {"q": golds})
    assert got == pytest.approx((em, f1))


def test_squad_missing_prediction_counts_as_wrong():
    assert metrics.squad_em_f1({}, {"a": ["x"], "b": ["y"]}) == (0.0, 0.0)


def test_mlqa_language_aware():
    # German articles are articles only for "de"; English articles are not removed in German.
    assert metrics.mlqa_em_f1({"q": "der Hund"}, {"q": ["Hund"]}, "de")[0] == 100.0
    assert metrics.mlqa_em_f1({"q": "der Hund"}, {"q": ["Hund"]}, "en")[0] == 0.0
    # Chinese: every CJK character is a token.
    em, f1 = metrics.mlqa_em_f1({"q": "北京"}, {"q": ["北京大学"]}, "zh")
    assert em == 0.0 and f1 == pytest.approx(100 * 2 * 1 * 0.5 / 1.5)
    # Unicode punctuation (not only ASCII) is stripped; Arabic "ال" is dropped.
    assert metrics.mlqa_em_f1({"q": "«Hund»"}, {"q": ["Hund"]}, "de")[0] == 100.0
    assert metrics.mlqa_em_f1({"q": "الكتاب"}, {"q": ["كتاب"]}, "ar")[0] == 100.0


def test_ner_f1_entity_level():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert metrics.tag_f1([["B-PER", "I-PER", "O", "O"]], gold) == pytest.approx(100 * 2 / 3)
    assert metrics.tag_f1([["B-PER", "O", "O", "B-LOC"]], gold) == pytest.approx(50.0)  # a cut span is wrong


def test_pos_f1_is_xtremes_seqeval_call_not_token_accuracy():
    gold = [["NOUN", "VERB", "NOUN", "NOUN"]]
    pred = [["NOUN", "VERB", "VERB", "NOUN"]]
    from seqeval.metrics import f1_score

    assert metrics.tag_f1(pred, gold) == pytest.approx(100 * f1_score(gold, pred))
    assert metrics.tag_f1(pred, gold) != pytest.approx(75.0)  # token accuracy would be 75


def test_tatoeba_accuracy_on_constructed_embeddings():
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(10, 8))
    perm = rng.permutation(10)
    sources = targets[perm] * 3.0 + 0.01 * rng.normal(size=(10, 8))  # scale must not matter (cosine)
    assert metrics.tatoeba_accuracy(sources, targets, perm) == 100.0
    assert metrics.tatoeba_accuracy(sources, targets) == pytest.approx(100 * np.mean(perm == np.arange(10)))


def test_bucc_mining_threshold_and_f1():
    rng = np.random.default_rng(1)
    en = rng.normal(size=(12, 16))
    gold = [(i, (i * 5) % 12) for i in range(6)]  # six translation pairs hidden among distractors
    src = np.stack([en[j] + 0.05 * rng.normal(size=16) for _, j in gold] + list(rng.normal(size=(6, 16))))
    cands = metrics.bucc_candidates(src, en, k=4)
    threshold = metrics.bucc_threshold(cands, gold)
    assert metrics.bucc_f1(cands, gold, threshold) == 100.0
    assert metrics.bucc_f1(cands, gold, float("-inf")) < 100.0  # keeping every candidate adds false pairs
    assert len({i for _, i, _ in cands}) == len(cands)  # each sentence used once
