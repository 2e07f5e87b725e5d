"""MLM masking with XLM-R's special-token layout (`<s>`=0 `<pad>`=1 `</s>`=2 `<unk>`=3 ... `<mask>` last).

A rule that tells specials by an id range (`id <= max(all_special_ids)`) counts every token as special on a real
XLM-R (its `<mask>` is 250001): nothing is masked and the MLM loss is NaN. These tests run on the toy tokenizer,
which has XLM-R's exact layout, and on a 250,002-piece tokenizer of XLM-R's size. Run: pytest tests/test_masking.py
"""

import math

import pytest
import torch


def test_toy_tokenizer_has_xlmr_special_layout(toy_tokenizer):
    tok = toy_tokenizer
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == len(tok) - 1 and tok.convert_ids_to_tokens(4) not in tok.all_special_tokens


def _batch(tok, n=64):
    from trainables.train import collate

    lines = [f"anna sees the red fox number {i} and bob sees a cat" for i in range(n)]
    return collate([{"input_ids": tok(line)["input_ids"]} for line in lines[: n // 2]]
                   + [{"input_ids": tok(line)["input_ids"][:6] + [tok.eos_token_id]} for line in lines[n // 2:]],
                   tok.pad_token_id)["input_ids"]


def test_masking_chooses_fifteen_percent_of_ordinary_tokens_and_never_a_special(toy_tokenizer):
    from trainables.features import IGNORE
    from trainables.train import mask_tokens, special_mask

    tok = toy_tokenizer
    ids = _batch(tok)
    special = special_mask(ids, tok)
    assert special[:, 0].all() and (ids == tok.pad_token_id).sum() > 0 and special[ids == tok.pad_token_id].all()
    masked, labels = mask_tokens(ids, tok, torch.Generator().manual_seed(0))
    chosen = labels != IGNORE
    share = chosen.sum().item() / (~special).sum().item()
    assert 0.11 < share < 0.19, share  # 15 % of ordinary tokens (~1,000 of them)
    assert not (chosen & special).any() and (masked[special] == ids[special]).all()
    assert (labels[chosen] == ids[chosen]).all()
    assert 0.7 < (masked[chosen] == tok.mask_token_id).float().mean().item() < 0.9
    replaced = chosen & (masked != ids) & (masked != tok.mask_token_id)
    assert replaced.any() and not special_mask(masked[replaced], tok).any()  # random replacements are ordinary


@pytest.mark.slow  # seconds of training or a subprocess: not the fast layer
def test_mlm_loss_is_finite_and_learns_with_xlmr_layout(toy_tokenizer):
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    from trainables.train import mask_tokens

    tok = toy_tokenizer
    torch.manual_seed(0)
    model = XLMRobertaForMaskedLM(XLMRobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=64,
                                                   pad_token_id=tok.pad_token_id))
    ids = _batch(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(30):
        masked, labels = mask_tokens(ids, tok, rng)
        loss = model(input_ids=masked, attention_mask=(ids != tok.pad_token_id).long(), labels=labels).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, losses  # it learned


@pytest.mark.slow
def test_masking_on_a_tokenizer_of_xlmr_size(tmp_path):
    """250,002 pieces with `<mask>` = 250001, as XLM-R's sentencepiece model plus fairseq's offset."""
    from transformers import AutoTokenizer, XLMRobertaTokenizer

    from trainables.features import IGNORE
    from trainables.train import mask_tokens

    words = ["anna", "sees", "the", "red", "fox", "number", "and", "bob", "a", "cat"] + [str(i) for i in range(64)]
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"\u2581{w}", -5.0) for w in words]
    vocab += [(f"p{i}", -15.0) for i in range(250_001 - len(vocab))]
    vocab += [("<mask>", 0.0)]
    XLMRobertaTokenizer(vocab=vocab).save_pretrained(str(tmp_path))
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(tok) == 250_002 and tok.mask_token_id == 250_001
    ids = _batch(tok)
    masked, labels = mask_tokens(ids, tok, torch.Generator().manual_seed(0))
    ordinary = ~torch.isin(ids, torch.tensor(tok.all_special_ids))
    share = (labels != IGNORE).sum().item() / ordinary.sum().item()
    assert 0.11 < share < 0.19, share
    assert masked.max().item() <= 250_001
