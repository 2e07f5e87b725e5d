"""Retrieval embeddings (`trainables.train.embed`): sorted by length and batched by tokens, they are the
embeddings each sentence gets on its own — padding and batch composition change nothing but the speed.

Run: pytest tests/test_embedding.py
"""

import numpy as np
import pytest
import torch

from trainables.model import MultiTaskModel, load_encoder
from trainables.train import embed, token_batches


def test_token_batches_stay_within_the_budget_and_keep_every_item_once():
    rng = np.random.default_rng(0)
    lengths = sorted(rng.integers(3, 120, size=500).tolist())
    order = list(range(500))
    batches = list(token_batches(order, lengths, budget=8 * 120))
    assert [i for b in batches for i in b] == order
    assert all(len(b) * lengths[b[-1]] <= 8 * 120 for b in batches)
    assert len(batches[0]) > 8 * len(batches[-1]) // 2  # short sentences go many to a batch
    assert list(token_batches([0, 1], [50, 900], budget=100)) == [[0], [1]]  # one too long still goes, alone


@pytest.mark.slow  # seconds of training or a subprocess: not the fast layer
def test_sorted_token_batched_embeddings_equal_one_sentence_at_a_time(tiny_mlm_base, toy_tokenizer):
    torch.manual_seed(0)
    model = MultiTaskModel(load_encoder(tiny_mlm_base))
    rng = np.random.default_rng(1)
    vocab = [w for w in toy_tokenizer.get_vocab() if w.isalpha()][:200]
    sentences = [" ".join(rng.choice(vocab, size=int(rng.integers(1, 40)))) for _ in range(70)]
    feats = [{"input_ids": toy_tokenizer(s)["input_ids"]} for s in sentences]
    together = embed(model, feats, 4, toy_tokenizer.pad_token_id, torch.device("cpu"), 0.5)
    alone = np.stack([embed(model, [f], 1, toy_tokenizer.pad_token_id, torch.device("cpu"), 0.5)[0] for f in feats])
    assert together.shape == (70, model.hidden)
    np.testing.assert_allclose(together, alone, atol=1e-5)
