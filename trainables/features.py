"""Featurisation per task kind with a Hugging Face fast tokenizer (normalised examples -> model inputs).

One function per kind:
  classification, pair_classification  input_ids (+ labels)
  multiple_choice                      input_ids per choice: [n_choices][len] (+ labels)
  span_qa                              windows as XTREME's SQuAD processor builds them; offsets for answer mapping,
                                       max-context flags; start/end positions (0 = the <s> token when the answer
                                       is not in the window / unanswerable)
  tagging                              labels on the first sub-word of each word, -100 elsewhere; long sentences
                                       split into chunks at word boundaries
  retrieval                            one input per sentence
Features are plain dicts of Python lists; `trainables.train.collate` pads them per batch. Which function
serves which kind is recorded in the per-kind table, `trainables.kinds`.
"""

from __future__ import annotations

from typing import Sequence

IGNORE = -100  # label id the loss ignores
CHUNK = 4096  # examples per call of `in_chunks`


def in_chunks(fn, examples: Sequence, tokenizer, max_length: int, **settings) -> list[dict]:
    """`fn(examples, tokenizer, max_length, **settings)` called `CHUNK` examples at a time, with a progress bar:
    the same features as one call, since every function here featurises each example on its own (a feature's
    `sentence`, the index of its example, is shifted by the chunk's start)."""
    from trainables.progress import bar

    out: list[dict] = []
    with bar(len(examples), f"tokenise ({fn.__name__.removeprefix('featurize_')})", unit="ex") as b:
        for lo in range(0, len(examples), CHUNK):
            part = fn(examples[lo:lo + CHUNK], tokenizer, max_length, **settings)
            if lo:
                part = [{**f, "sentence": f["sentence"] + lo} if "sentence" in f else f for f in part]
            out += part
            b.update(min(CHUNK, len(examples) - lo))
    return out


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


MAX_QUERY_TOKENS = 64  # the SQuAD processor's max_query_length


def pair_template(tokenizer) -> tuple[list[int], list[int], list[int]]:
    """The special tokens a pair gets, before / between / after its two sequences (XLM-R: <s> | </s></s> | </s>)."""
    enc = tokenizer("a", "b")
    ids, seq = enc["input_ids"], enc.sequence_ids(0)
    first, second = seq.index(0), seq.index(1)
    last0 = max(i for i, s in enumerate(seq) if s == 0)
    last1 = max(i for i, s in enumerate(seq) if s == 1)
    return ids[:first], ids[last0 + 1:second], ids[last1 + 1:]


def _windows(n_doc: int, length: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of each window: window k starts at k * doc_stride; the last reaches the document's end."""
    spans, start = [], 0
    while True:
        spans.append((start, min(length, n_doc - start)))
        if start + length >= n_doc:
            return spans
        start += doc_stride


def _max_context(spans: list[tuple[int, int]], position: int) -> int:
    """The window where a doc token has the most context: min(left, right) + 0.01 * window length, first best
    (`_new_check_is_max_context`)."""
    best, best_k = None, None
    for k, (start, length) in enumerate(spans):
        if start <= position <= start + length - 1:
            score = min(position - start, start + length - 1 - position) + 0.01 * length
            if best is None or score > best:
                best, best_k = score, k
    return best_k


def featurize_span_qa(examples: Sequence[dict], tokenizer, max_length: int, doc_stride: int = 128, **_) -> list[dict]:
    """Question + context windows, as XTREME's SQuAD processor builds them (xtreme third_party/processors/
    squad.py, HF's `squad_convert_example_to_features`): the question is cut to its first 64 sub-tokens; a window
    holds L = max_length - len(question) - specials document sub-tokens, and window k starts doc_stride * k
    sub-tokens in (the tokenizer's overlap is L - doc_stride). Every feature keeps `example_id`, `offsets`
    (character spans) and `max_context` (whether this window is the one where each
    document token has the most context: answers may only start at such tokens). Tokens outside the document
    have offsets (-1, -1)."""
    prefix, middle, suffix = pair_template(tokenizer)
    questions = tokenizer([e["question"] for e in examples], add_special_tokens=False)["input_ids"]
    contexts = tokenizer([e["context"] for e in examples], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for n, ex in enumerate(examples):
        question = questions[n][:MAX_QUERY_TOKENS]
        doc, offsets = contexts["input_ids"][n], [tuple(o) for o in contexts["offset_mapping"][n]]
        length = max_length - len(question) - len(prefix) - len(middle) - len(suffix)
        if length <= 0:
            raise ValueError(f"qa_max_length {max_length} leaves no room for the document after a "
                             f"{len(question)}-token question; raise it")
        spans = _windows(len(doc), length, min(doc_stride, length))
        answer = None
        if ex["answers"]["text"]:
            a_start = ex["answers"]["answer_start"][0]
            a_end = a_start + len(ex["answers"]["text"][0])
            inside = [k for k, o in enumerate(offsets) if o[0] < a_end and o[1] > a_start]
            answer = (inside[0], inside[-1]) if inside else None
        head = len(prefix) + len(question) + len(middle)  # input position of the first document token
        for k, (start, size) in enumerate(spans):
            ids = prefix + question + middle + doc[start:start + size] + suffix
            feat_offsets = [(-1, -1)] * len(ids)
            max_context = [False] * len(ids)
            for t in range(size):
                feat_offsets[head + t] = offsets[start + t]
                max_context[head + t] = _max_context(spans, start + t) == k
            s_pos = e_pos = 0  # the answer outside this window (or none): point at <s>
            if answer and start <= answer[0] and answer[1] < start + size:
                s_pos, e_pos = head + answer[0] - start, head + answer[1] - start
            out.append({"input_ids": ids, "start_positions": s_pos, "end_positions": e_pos,
                        "example_id": ex["id"], "offsets": feat_offsets, "max_context": max_context})
    return out


def featurize_tagging(examples: Sequence[dict], tokenizer, max_length: int, labels: Sequence[str] = (), **_) -> list[dict]:
    """Tags on the first sub-word of each word (XTREME/jiant), -100 elsewhere. A sentence longer than the model's
    window is split into chunks at word boundaries, as XTREME's preprocessing does (xtreme utils_preprocess.py
    `_preprocess_one_file`), so every gold word is tagged and scored; a word of no sub-token, or of more than
    fit in a window, becomes the unknown token. Each feature records its `sentence` and its `first_word`."""
    label_ids = {name: i for i, name in enumerate(labels)}
    limit = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    words = [w for e in examples for w in e["tokens"]]
    sizes = iter([len(ids) for ids in tokenizer(words, add_special_tokens=False)["input_ids"]] if words else [])
    chunks = []  # (sentence, first word, words, tags)
    for n, e in enumerate(examples):
        first, used, cur = 0, 0, []
        for w, word in enumerate(e["tokens"]):
            size = next(sizes)
            if size == 0 or size > limit:
                word, size = tokenizer.unk_token, 1
            if cur and used + size > limit:
                chunks.append((n, first, cur, e["tags"][first:first + len(cur)]))
                first, used, cur = w, 0, []
            cur.append(word)
            used += size
        chunks.append((n, first, cur, e["tags"][first:first + len(cur)]))
    enc = tokenizer([c[2] for c in chunks], is_split_into_words=True, truncation=True, max_length=max_length)
    out = []
    for i, (n, first, chunk_words, tags) in enumerate(chunks):
        word_ids = enc.word_ids(i)
        ids, previous = [], None
        for w in word_ids:
            ids.append(label_ids[tags[w]] if w is not None and w != previous else IGNORE)
            previous = w
        out.append({"input_ids": enc["input_ids"][i], "labels": ids, "sentence": n, "first_word": first,
                    "n_words": len(chunk_words)})
    return out


def featurize_sentences(sentences: Sequence[str], tokenizer, max_length: int, **_) -> list[dict]:
    enc = tokenizer(list(sentences), truncation=True, max_length=max_length)
    return [{"input_ids": ids} for ids in enc["input_ids"]]
