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


def every_language(per_task: dict) -> dict:
    """Each task's published number on every language XTREME lists for it (the mean over languages is that
    number): XTREME is scored only on full language coverage (evaluate.py refuses a missing language file)."""
    from trainables.tasks import TASKS

    return {t: {lang: m for lang in TASKS[t].languages} for t, m in per_task.items()}


def test_xtreme_golden_68_25():
    out = metrics.xtreme_score(every_language(XLMR_LARGE))
    assert out["missing"] is None and metrics.describe(out["missing"], 9) == "XTREME"
    assert out["xtreme"] == pytest.approx(68.25, abs=1e-9) and out["average"] == out["xtreme"]
    assert out["tasks"]["xquad"] == pytest.approx(68.7) and out["tasks"]["tydiqa"] == pytest.approx(55.05)
    assert out["categories"]["qa"] == pytest.approx((68.7 + 62.4 + 55.05) / 3)


def test_xtreme_only_for_all_nine_targets():
    """evaluate.py reports the overall score only when every task is present; fewer is an average of k."""
    partial = every_language({t: m for t, m in XLMR_LARGE.items() if t != "tatoeba"})
    out = metrics.xtreme_score(partial)
    assert out["xtreme"] is None and out["missing"] == {"targets": ["tatoeba"]}
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


def test_ner_f1_entity_level():  # noqa: D103
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert metrics.tag_f1([["B-PER", "I-PER", "O", "O"]], gold) == pytest.approx(100 * 2 / 3)
    assert metrics.tag_f1([["B-PER", "O", "O", "B-LOC"]], gold) == pytest.approx(50.0)  # a cut span is wrong


def test_pos_f1_is_xtremes_seqeval_call_not_token_accuracy():
    gold = [["NOUN", "VERB", "NOUN", "NOUN"]]
    pred = [["NOUN", "VERB", "VERB", "NOUN"]]
    assert metrics.tag_f1(pred, gold) != pytest.approx(75.0)  # token accuracy would be 75


def test_tatoeba_accuracy_on_constructed_embeddings():
    rng = np.random.default_rng(0)
    sources = rng.normal(size=(10, 8))
    perm = rng.permutation(10)
    targets = sources[perm] * 3.0 + 0.01 * rng.normal(size=(10, 8))  # scale must not matter (cosine)
    gold = [(int(perm[j]), j) for j in range(10)]  # target j translates source perm[j]
    assert metrics.tatoeba_accuracy(sources, targets, gold) == 100.0
    assert metrics.tatoeba_accuracy(sources, targets) == pytest.approx(100 * np.mean(perm == np.arange(10)))


def test_tatoeba_queries_with_english_over_the_other_language():
    """xtreme utils_retrieve.py `similarity_search`: `idx.add(x); idx.search(y, 1)`, y = English. Here both
    foreign sentences lie nearest to English sentence 0, so foreign queries score 50 %; English queries each
    find their own translation: 100 %."""
    en = np.array([[1.0, 0.0], [0.0, 1.0]])
    foreign = np.array([[1.0, 0.2], [1.0, 0.9]])
    gold = [(0, 0), (1, 1)]
    foreign_queries = 100 * np.mean((foreign @ en.T).argmax(1) == [0, 1])
    assert foreign_queries == 50.0
    assert metrics.tatoeba_accuracy(foreign, en, gold) == 100.0


def _official_mine(x, y, k=4):
    """A dense, line-by-line transcription of xtreme utils_retrieve.py mine_bitext(retrieval='max',
    margin='ratio', dist='cosine') to check the blocked implementation against."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    sims = x @ y.T
    x2y_ind = np.argsort(-sims, axis=1)[:, :k]
    y2x_ind = np.argsort(-sims.T, axis=1)[:, :k]
    x2y_mean = np.take_along_axis(sims, x2y_ind, 1).mean(1)
    y2x_mean = np.take_along_axis(sims.T, y2x_ind, 1).mean(1)
    fwd = np.array([[sims[i, j] / ((x2y_mean[i] + y2x_mean[j]) / 2) for j in x2y_ind[i]] for i in range(len(x))])
    bwd = np.array([[sims[i, j] / ((y2x_mean[j] + x2y_mean[i]) / 2) for i in y2x_ind[j]] for j in range(len(y))])
    fwd_best = x2y_ind[np.arange(len(x)), fwd.argmax(1)]
    bwd_best = y2x_ind[np.arange(len(y)), bwd.argmax(1)]
    indices = np.stack((np.concatenate((np.arange(len(x)), bwd_best)), np.concatenate((fwd_best, np.arange(len(y))))), 1)
    scores = np.concatenate((fwd.max(1), bwd.max(1)))
    seen_src, seen_trg, out = set(), set(), []
    for i in np.argsort(-scores, kind="stable"):
        s, t = indices[i]
        if s not in seen_src and t not in seen_trg:
            seen_src.add(s), seen_trg.add(t)
            out.append((scores[i], int(s), int(t)))
    return out


def test_bucc_mining_equals_the_official_algorithm_in_blocks(monkeypatch):
    from trainables import retrieval

    rng = np.random.default_rng(3)
    y = rng.normal(size=(300, 16))
    x = np.concatenate([y[:150] + 0.3 * rng.normal(size=(150, 16)), rng.normal(size=(120, 16))])
    reference = _official_mine(x, y)
    monkeypatch.setattr(retrieval, "QUERY_BLOCK", 64)  # many blocks: the merge across blocks is exercised
    monkeypatch.setattr(retrieval, "BASE_BLOCK", 50)
    got = metrics.bucc_candidates(x, y, k=4)
    assert [(i, j) for _, i, j in got] == [(i, j) for _, i, j in reference]
    assert [s for s, _, _ in got] == pytest.approx([s for s, _, _ in reference], rel=1e-5)


def test_bucc_margin_uses_only_the_k_candidates():
    """The ratio margin is computed on each side's k nearest neighbours only: a target outside a source's
    top-k can never be its forward best, whatever its margin."""
    from trainables import retrieval

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(40, 8)), rng.normal(size=(60, 8))
    xn, yn = retrieval.normalise(x), retrieval.normalise(y)
    top4 = np.argsort(-(xn @ yn.T), axis=1)[:, :4]
    for score, i, j in metrics.bucc_candidates(x, y, k=4):
        back = np.argsort(-(yn @ xn.T), axis=1)[:, :4]
        assert j in top4[i] or i in back[j]


def test_bucc_threshold_and_f1_follow_bucc_optimize():
    cands = [(3.0, 0, 0), (2.5, 1, 1), (2.0, 2, 9), (1.5, 3, 3), (1.0, 4, 8)]
    gold = [(0, 0), (1, 1), (3, 3), (5, 5)]  # (5, 5) was never mined: it still counts in recall
    # best F1 after 4 candidates (3 right of 4; recall 3/4): F1 0.75, midpoint between 1.5 and 1.0
    assert metrics.bucc_threshold(cands, gold) == pytest.approx(1.25)
    assert metrics.bucc_f1(cands, gold, 1.25) == pytest.approx(75.0)
    assert metrics.bucc_f1(cands, gold, 1.5) == pytest.approx(75.0)  # score >= threshold is kept


def test_bucc_duplicate_sentences_are_dropped_as_xtreme_does():
    """xtreme mines unique sentences (text_load_unify) and drops any text that occurs twice when mapping
    candidates back to ids (read_sent2id): such gold pairs can never be found but still count."""
    from trainables import retrieval

    texts, ids = retrieval.unique(["a", "b", "a", "c"])
    assert texts == ["a", "b", "c"] and ids == [-1, 1, 3]
    src = np.eye(3)
    cands = retrieval.bucc_mine(src, np.eye(3), ids, [0, 1, 2])
    assert {(i, j) for _, i, j in cands} == {(1, 1), (3, 2)}  # "a" (repeated) is gone


@pytest.mark.parametrize("pred, gold, f1", [
    ([["NOUN", "VERB", "VERB"]], [["NOUN", "NOUN", "VERB"]], 0.0),   # runs of one tag merge into one chunk
    ([["NOUN", "ADJ", "VERB"]], [["NOUN", "NOUN", "VERB"]], 40.0),
    ([["CCONJ"]], [["SCONJ"]], 0.0),  # seqeval 1.2.2 would say 100: both become type "CONJ"
    ([["SCONJ", "SCONJ"]], [["SCONJ", "SCONJ"]], 100.0),  # S-initial tags are single-token chunks
])
def test_pos_f1_is_seqeval_0_0_12(pred, gold, f1):
    """The outputs of seqeval 0.0.12's f1_score (the version XTREME and jiant used) on these inputs."""
    assert metrics.tag_f1(pred, gold) == pytest.approx(f1)


def test_ner_f1_agrees_with_seqeval_on_bio_tags():
    from seqeval.metrics import f1_score

    rng = np.random.default_rng(7)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    for _ in range(50):
        gold = [[tags[t] for t in rng.integers(0, 7, size=rng.integers(1, 12))] for _ in range(4)]
        pred = [[t if rng.random() < 0.7 else tags[rng.integers(0, 7)] for t in sent] for sent in gold]
        assert metrics.tag_f1(pred, gold) == pytest.approx(100 * f1_score(gold, pred))


def test_squad_v1_f1_of_empty_strings_is_zero():
    """xtreme third_party/evaluate_squad.py f1_score: `if num_same == 0: return 0`, also for ('', '');
    exact match of two empty strings is 1. The v2.0 rule (empty = right) is SQuAD v2's only."""
    assert metrics.squad_em_f1({"q": ""}, {"q": [""]}) == (100.0, 0.0)
    assert metrics.squad_em_f1({"q": "the"}, {"q": ["a"]}) == (100.0, 0.0)  # both normalise to empty
    assert metrics.squad_em_f1({"q": ""}, {"q": [""]}, version="2.0") == (100.0, 100.0)
    assert metrics.mlqa_em_f1({"q": ""}, {"q": [""]}, "en") == (100.0, 0.0)
