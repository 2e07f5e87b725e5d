"""Progress bars: shown on a terminal only (never in a log file, CI or a Ray trial), off with `progress: false`;
and tokenising in chunks (so it can show progress) gives exactly the features of one call.

Run: pytest tests/test_progress.py
"""

import io
import os
import sys

import numpy as np
import pytest
import torch

from trainables import features as F
from trainables import progress
from trainables.retrieval import knn
from trainables.train import fit


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def stderr(monkeypatch):
    """Point stderr at a fake terminal (or, with .tty False, a plain file) and show bars at once."""
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    progress.switch(True)
    yield lambda tty: monkeypatch.setattr(sys, "stderr", Terminal() if tty else io.StringIO()) or sys.stderr
    progress.switch(True)


def _work(tok):
    """Tokenising, nearest neighbours and a few training steps, each behind a bar."""
    F.in_chunks(F.featurize_sentences, ["anna sees the fox ."] * 10, tok, 16)
    knn(np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32), 1)
    model = torch.nn.Linear(2, 1)
    fit(model, lambda: torch.ones(1, 2), lambda b: model(b).sum(), 3, 1e-3, torch.device("cpu"), progress=True,
        desc="unit-fit")


def test_bars_on_a_terminal_only(stderr, toy_tokenizer):
    shown = stderr(tty=True)
    _work(toy_tokenizer)
    text = shown.getvalue()
    assert "tokenise (sentences)" in text and "nearest 1 of 4" in text and "unit-fit" in text, text

    logged = stderr(tty=False)
    _work(toy_tokenizer)
    assert logged.getvalue() == ""

    off = stderr(tty=True)
    progress.switch(False)  # a pipeline config's `progress: false`
    _work(toy_tokenizer)
    assert off.getvalue() == ""


def test_tokenising_in_chunks_equals_one_call(monkeypatch, toy_tokenizer):
    """Every kind's features, computed 3 examples at a time, equal one call over all (a tagging feature's
    `sentence` index shifted by its chunk's start; long sentences split into several features)."""
    monkeypatch.setattr(F, "CHUNK", 3)
    words = ["anna", "sees", "the", "red", "fox", "boris", "feeds", "the", "old", "goat"]
    tagging = [{"tokens": words[: 2 + n] * (1 + 3 * (n % 2)), "tags": (["NOUN"] * (2 + n)) * (1 + 3 * (n % 2))}
               for n in range(8)]
    qa = [{"id": f"q{n}", "question": "who feeds the goat ?", "context": " ".join(words * (1 + n)),
           "answers": {"text": ["boris"], "answer_start": [" ".join(words).index("boris")]}} for n in range(7)]
    pairs = [{"text_a": " ".join(words[:n + 1]), "text_b": "the fox", "label": n % 3} for n in range(7)]
    choice = [{"context": "which animal barks ?", "choices": ["dog", "cat", "fox"], "label": n % 3} for n in range(7)]
    cases = [(F.featurize_tagging, tagging, {"labels": ("NOUN",)}), (F.featurize_span_qa, qa, {"doc_stride": 8}),
             (F.featurize_classification, pairs, {}), (F.featurize_multiple_choice, choice, {}),
             (F.featurize_sentences, [p["text_a"] for p in pairs], {})]
    for fn, examples, settings in cases:
        whole = fn(examples, toy_tokenizer, 24, **settings)
        assert F.in_chunks(fn, examples, toy_tokenizer, 24, **settings) == whole, fn.__name__
    assert len(F.featurize_tagging(tagging, toy_tokenizer, 24, labels=("NOUN",))) > len(tagging)  # some split
    assert {f["sentence"] for f in F.featurize_tagging(tagging, toy_tokenizer, 24, labels=("NOUN",))} == set(range(8))


def test_hugging_face_bars_are_off_where_stderr_is_a_file(monkeypatch):
    """transformers' own bars ("Writing model shards") honour HF_HUB_DISABLE_PROGRESS_BARS: set where stderr is
    not a terminal (a log file, CI), left alone on a terminal and when the user chose a value."""
    from trainables.progress import quiet_libraries

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr(sys, "stderr", Terminal())
    quiet_libraries()
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    quiet_libraries()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    quiet_libraries()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"
