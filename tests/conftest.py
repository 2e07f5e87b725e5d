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
