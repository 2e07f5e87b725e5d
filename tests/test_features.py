"""Featurisation per kind with the toy tokenizer: QA spans map back exactly, tags land on first sub-words.

Run: pytest tests/test_features.py
"""

from trainables.features import IGNORE, featurize_span_qa
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
