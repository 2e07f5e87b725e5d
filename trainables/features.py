"""Featurisation per task kind with a Hugging Face fast tokenizer (normalised examples -> model inputs).

One function per kind:
  classification, pair_classification  input_ids (+ labels)
  multiple_choice                      input_ids per choice: [n_choices][len] (+ labels)
  span_qa                              windows with doc stride; offsets for answer mapping; start/end positions
                                       (0 = the <s> token when the answer is not in the window / unanswerable)
  tagging                              labels on the first sub-word of each word, -100 elsewhere
  retrieval                            one input per sentence
Features are plain dicts of Python lists; `trainables.train.collate` pads them per batch. Which function
serves which kind is recorded in the per-kind table, `trainables.kinds`.
"""

from __future__ import annotations

from typing import Sequence

IGNORE = -100  # label id the loss ignores


def featurize_classification(examples: Sequence[dict], tokenizer, max_length: int, **_) -> list[dict]:
    a = [e["text_a"] for e in examples]
    b = [e["text_b"] for e in examples] if examples and "text_b" in examples[0] else None
    enc = tokenizer(a, b, truncation=True, max_length=max_length)
    return [{"input_ids": ids, "labels": e["label"]} for ids, e in zip(enc["input_ids"], examples)]


def featurize_multiple_choice(examples: Sequence[dict], tokenizer, max_length: int, **_) -> list[dict]:
    out = []
    for e in examples:
        enc = tokenizer([e["context"]] * len(e["choices"]), list(e["choices"]), truncation=True,
                        max_length=max_length)
        out.append({"input_ids": enc["input_ids"], "labels": e["label"]})
    return out


def featurize_span_qa(examples: Sequence[dict], tokenizer, max_length: int, doc_stride: int = 128, **_) -> list[dict]:
    """Question + context windows. Every feature keeps `example_id` and `offsets` (None outside the context)."""
    stride = min(doc_stride, max_length // 4)  # the tokenizer refuses a stride as long as the window
    enc = tokenizer([e["question"] for e in examples], [e["context"] for e in examples],
                    truncation="only_second", max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    out = []
    for i, ids in enumerate(enc["input_ids"]):
        ex = examples[enc["overflow_to_sample_mapping"][i]]
        seq = enc.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq)]
        start = end = 0
        if ex["answers"]["text"]:
            a_start = ex["answers"]["answer_start"][0]
            a_end = a_start + len(ex["answers"]["text"][0])
            inside = [k for k, o in enumerate(offsets) if o is not None]
            if inside and offsets[inside[0]][0] <= a_start and offsets[inside[-1]][1] >= a_end:
                start = max(k for k in inside if offsets[k][0] <= a_start)
                end = min(k for k in inside if offsets[k][1] >= a_end)
        out.append({"input_ids": ids, "start_positions": start, "end_positions": end,
                    "example_id": ex["id"], "offsets": offsets})
    return out


def featurize_tagging(examples: Sequence[dict], tokenizer, max_length: int, labels: Sequence[str] = (), **_) -> list[dict]:
    label_ids = {name: i for i, name in enumerate(labels)}
    enc = tokenizer([e["tokens"] for e in examples], is_split_into_words=True, truncation=True, max_length=max_length)
    out = []
    for i, e in enumerate(examples):
        word_ids = enc.word_ids(i)
        tags, previous = [], None
        for w in word_ids:
            # Only the first sub-word of a word carries its tag (XTREME/jiant convention).
            tags.append(label_ids[e["tags"][w]] if w is not None and w != previous else IGNORE)
            previous = w
        n_words = max((w for w in word_ids if w is not None), default=-1) + 1
        out.append({"input_ids": enc["input_ids"][i], "labels": tags, "n_words": n_words})
    return out


def featurize_sentences(sentences: Sequence[str], tokenizer, max_length: int, **_) -> list[dict]:
    enc = tokenizer(list(sentences), truncation=True, max_length=max_length)
    return [{"input_ids": ids} for ids in enc["input_ids"]]
