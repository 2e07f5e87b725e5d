"""Featurisation per kind with the toy tokenizer: QA spans map back exactly, tags land on first sub-words.

Run: pytest tests/test_features.py
"""

import numpy as np

from trainables.evaluate import best_spans
from trainables.features import IGNORE, MAX_QUERY_TOKENS, featurize_span_qa, featurize_tagging
from trainables.kinds import featurize


def _answer_text(feature, context):
    s, e = feature["start_positions"], feature["end_positions"]
    return context[feature["offsets"][s][0]:feature["offsets"][e][1]]


def test_qa_answer_maps_back_to_its_text(toy_tokenizer):
    context = "anna sees the red fox in the park . boris feeds the old goat in the city ."
    start = context.index("old goat")
    ex = {"id": "q", "question": "boris feeds what ?", "context": context,
          "answers": {"text": ["old goat"], "answer_start": [start]}}
    (feat,) = featurize_span_qa([ex], toy_tokenizer, max_length=128)
    assert feat["start_positions"] > 0
    assert _answer_text(feat, context) == "old goat"


def test_qa_long_context_windows_with_stride(toy_tokenizer):
    filler = " ".join(f"mira paints the blue duck in the garden {i} ." for i in range(40))
    context = filler + " pavel buys the quick wolf in the river ."
    start = context.index("quick wolf")
    ex = {"id": "long", "question": "pavel buys what ?", "context": context,
          "answers": {"text": ["quick wolf"], "answer_start": [start]}}
    feats = featurize_span_qa([ex], toy_tokenizer, max_length=48, doc_stride=16)
    assert len(feats) > 3  # the context did not fit: several windows
    assert all(len(f["input_ids"]) <= 48 for f in feats)
    hits = [f for f in feats if f["start_positions"] > 0]
    assert hits, "some window must contain the answer"
    assert all(_answer_text(f, context) == "quick wolf" for f in hits)
    assert any(f["start_positions"] == 0 for f in feats)  # windows without the answer point at <s>


def _long_example(tok):
    words = " ".join(f"w{i}" for i in range(90))  # each "w<i>" is several pieces: a long document
    return {"id": "x", "question": "anna sees what ?", "context": words, "answers": {"text": [], "answer_start": []}}


def test_qa_windows_advance_by_doc_stride_as_the_squad_processor(toy_tokenizer):
    """xtreme third_party/processors/squad.py: window k starts k * doc_stride document tokens in and holds
    L = max_length - len(question) - specials tokens; the last window reaches the end of the document."""
    ex = _long_example(toy_tokenizer)
    doc = toy_tokenizer(ex["context"], add_special_tokens=False)["input_ids"]
    question = toy_tokenizer(ex["question"], add_special_tokens=False)["input_ids"]
    feats = featurize_span_qa([ex], toy_tokenizer, max_length=64, doc_stride=20)
    length = 64 - len(question) - 4  # <s> q </s></s> d </s>
    head = 1 + len(question) + 2
    for k, f in enumerate(feats):
        assert f["input_ids"][head:-1] == doc[20 * k:20 * k + length]
        assert f["input_ids"][1:1 + len(question)] == question
    assert len(feats[0]["input_ids"]) == 64
    assert 20 * (len(feats) - 1) + length >= len(doc) > 20 * (len(feats) - 2) + length


def test_qa_question_is_cut_to_64_tokens(toy_tokenizer):
    ex = {**_long_example(toy_tokenizer), "question": " ".join(["anna"] * 100)}
    (feat, *_) = featurize_span_qa([ex], toy_tokenizer, max_length=128, doc_stride=32)
    first_doc = min(i for i, o in enumerate(feat["offsets"]) if o[0] >= 0)
    assert first_doc == 1 + MAX_QUERY_TOKENS + 2


def test_qa_answers_start_only_at_max_context_tokens(toy_tokenizer):
    """A document of three overlapping windows. The first window scores a span starting near its right edge
    highest; that token has more context in the second window (token_is_max_context is False in the first), so
    XTREME's post-processing ignores it there and takes the second window's best span instead."""
    ex = _long_example(toy_tokenizer)
    feats = featurize_span_qa([ex], toy_tokenizer, max_length=64, doc_stride=20)
    assert len(feats) >= 3
    first, second = feats[0], feats[1]
    edge = max(i for i, o in enumerate(first["offsets"]) if o[0] >= 0) - 1  # near the right edge
    assert not first["max_context"][edge]
    good = next(i for i, m in enumerate(second["max_context"]) if m)
    logits = [np.zeros((len(f["input_ids"]), 2)) for f in feats]
    logits[0][edge] = [10.0, 10.0]  # the best span of all, but not max-context in this window
    logits[1][good] = [5.0, 5.0]
    context = ex["context"]
    expected = context[second["offsets"][good][0]:second["offsets"][good][1]]
    assert best_spans(feats, logits, {"x": context}) == {"x": expected}
    without_rule = [{**f, "max_context": [o[0] >= 0 for o in f["offsets"]]} for f in feats]
    assert best_spans(without_rule, logits, {"x": context})["x"] != expected


def test_long_tagged_sentences_are_chunked_not_truncated(toy_tokenizer):
    """xtreme utils_preprocess.py splits sentences longer than the window at word boundaries; every word is
    tagged (jiant's truncation would drop the tail from scoring)."""
    words = ["anna", "sees", "the", "red", "fox"] * 12
    tags = ["PROPN", "VERB", "DET", "ADJ", "NOUN"] * 12
    labels = ["ADJ", "DET", "NOUN", "PROPN", "VERB"]
    feats = featurize_tagging([{"tokens": words, "tags": tags}], toy_tokenizer, 16, labels=labels)
    assert len(feats) > 3 and all(len(f["input_ids"]) <= 16 for f in feats)
    assert sum(f["n_words"] for f in feats) == len(words)
    assert [f["first_word"] for f in feats] == sorted(f["first_word"] for f in feats)
    tagged = [labels[l] for f in feats for l in f["labels"] if l != IGNORE]
    assert tagged == tags


def test_qa_unanswerable_points_at_cls(toy_tokenizer):
    ex = {"id": "u", "question": "who ?", "context": "anna sees the fox .", "answers": {"text": [], "answer_start": []}}
    (feat,) = featurize_span_qa([ex], toy_tokenizer, max_length=32)
    assert (feat["start_positions"], feat["end_positions"]) == (0, 0)


def test_tagging_labels_on_first_subword_only(toy_tokenizer):
    tokens = ["anna", "zzzqqqxx", "the", "fox"]  # an unknown long word splits into several pieces
    labels = ["PROPN", "VERB", "DET", "NOUN"]
    (feat,) = featurize("tagging", [{"tokens": tokens, "tags": labels}], toy_tokenizer, 64, labels=labels)
    enc = toy_tokenizer(tokens, is_split_into_words=True)
    word_ids = enc.word_ids()
    assert word_ids.count(1) > 1, "test needs a word that splits into sub-words"
    first = {w: i for i, w in reversed(list(enumerate(word_ids))) if w is not None}
    for i, w in enumerate(word_ids):
        expected = labels.index(labels[w]) if w is not None and first[w] == i else IGNORE
        assert feat["labels"][i] == expected
    assert [l for l in feat["labels"] if l != IGNORE] == [0, 1, 2, 3]


def test_multiple_choice_shapes(toy_tokenizer):
    exs = [{"context": "which animal barks ?", "choices": ["dog", "cat", "fish", "bird", "duck"], "label": 0},
           {"context": "which animal swims ?", "choices": ["dog", "cat", "fish", "bird", "duck"], "label": 2}]
    feats = featurize("multiple_choice", exs, toy_tokenizer, 32)
    assert [len(f["input_ids"]) for f in feats] == [5, 5]
    assert [f["labels"] for f in feats] == [0, 2]
    assert toy_tokenizer.decode(feats[1]["input_ids"][2], skip_special_tokens=True).split()[-1] == "fish"


def test_pair_classification_encodes_both_segments(toy_tokenizer):
    (feat,) = featurize("pair_classification", [{"text_a": "anna sees", "text_b": "boris feeds", "label": 1}],
                        toy_tokenizer, 32)
    ids = feat["input_ids"]
    assert ids[0] == toy_tokenizer.bos_token_id and ids.count(toy_tokenizer.eos_token_id) == 3  # <s> A </s></s> B </s>
    assert feat["labels"] == 1
