"""Shared fixtures. Tests never touch the network: the Hub is switched off before anything imports it."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """The toy benchmark (seed 0), generated once per test session."""
    from trainables.toy import write_toy

    return write_toy(tmp_path_factory.mktemp("toy"), seed=0)


@pytest.fixture(scope="session")
def toy_tokenizer(toy_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(toy_dir / "tokenizer"))


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """One cache (toy model + phase-2 entries) for the whole session, so the toy MLM is built once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_mlm_base(toy_dir, tmp_path_factory):
    """A dropout-free tiny masked LM (2 layers, hidden 32) + the toy tokenizer (XLM-R's special layout): an
    encoder that loads in a blink, for tests of the training code rather than of what the toy model learned."""
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForMaskedLM

    tok = AutoTokenizer.from_pretrained(str(toy_dir / "tokenizer"))
    torch.manual_seed(0)
    model = XLMRobertaForMaskedLM(XLMRobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                                   num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.0,
                                                   attention_probs_dropout_prob=0.0, pad_token_id=tok.pad_token_id))
    out = tmp_path_factory.mktemp("tiny-mlm")
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
