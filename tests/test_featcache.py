"""Tokenised features cached by content: read back memory-mapped, equal to fresh ones, computed once; the
DataLoader path gives the same batches. Run: pytest tests/test_featcache.py"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables import data as D
from trainables import featcache
from trainables.featcache import Examples, FeatureSet, cached
from trainables.kinds import featurize
from trainables.train import collate, epoch_batches

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def feature_cache(tmp_path):
    featcache.use(tmp_path / "cache")
    yield tmp_path / "cache"
    featcache.use(None)


CASES = [("xnli", "validation", "pair_classification", {}), ("udpos", "validation", "tagging", {"labels": True}),
         ("xquad", "test", "span_qa", {"doc_stride": 16}), ("mlqa", "validation", "span_qa", {"doc_stride": 128})]


@pytest.mark.parametrize("task, split, kind, settings", CASES)
def test_cached_features_equal_fresh_ones(task, split, kind, settings, toy_dir, toy_tokenizer, feature_cache):
    examples = D.load_split(task, split, toy_dir)["de"]
    assert isinstance(examples, Examples) and examples.key["files"]
    if settings.pop("labels", False):
        settings["labels"] = D.get_task(task).labels
    fresh = featurize(kind, list(examples), toy_tokenizer, 64, **settings)  # a plain list: no key, not cached
    stored = featurize(kind, examples, toy_tokenizer, 64, **settings)
    again = featurize(kind, examples, toy_tokenizer, 64, **settings)
    assert isinstance(stored, FeatureSet) and len(stored) == len(fresh) == len(again)
    for batch in ([0, 1, 2], list(range(len(fresh) - 3, len(fresh)))):
        a = collate([fresh[i] for i in batch], 1)
        b = collate([stored[i] for i in batch], 1)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for key in fresh[0]:  # every field, not only what collate uses (QA offsets, max-context, chunk bookkeeping)
        for i in (0, len(fresh) - 1):
            assert np.array_equal(np.asarray(fresh[i][key]), np.asarray(stored[i][key])), key


def test_multiple_choice_features_round_trip(toy_dir, toy_tokenizer, feature_cache):
    examples = D.load_split("commonsenseqa", "train", toy_dir)["en"]
    fresh = featurize("multiple_choice", list(examples)[:50], toy_tokenizer, 32)
    stored = featurize("multiple_choice", featcache.take(examples, 50), toy_tokenizer, 32)
    a, b = collate(fresh[:8], 1), collate([stored[i] for i in range(8)], 1)
    assert all(torch.equal(a[k], b[k]) for k in a) and a["input_ids"].dim() == 3


def test_computed_once_and_rebuilt_when_broken(toy_dir, toy_tokenizer, feature_cache):
    calls = []

    def counting(examples, tok, max_length, **kw):
        calls.append(1)
        return featurize("pair_classification", list(examples), tok, max_length)

    examples = D.load_split("xnli", "validation", toy_dir)["ru"]
    cached(counting, examples, toy_tokenizer, 64)
    cached(counting, D.load_split("xnli", "validation", toy_dir)["ru"], toy_tokenizer, 64)  # loaded again
    assert len(calls) == 1
    (entry,) = feature_cache.glob("features-*")
    (entry / "input_ids.flat.npy").write_bytes(b"\x00" * 10)  # truncated by a crash
    again = cached(counting, examples, toy_tokenizer, 64)
    assert len(calls) == 2 and len(again) == len(examples)
    cached(counting, featcache.take(examples, 10), toy_tokenizer, 64)  # another slice: another entry
    assert len(calls) == 3


def test_dataloader_workers_give_the_same_batches(toy_dir, toy_tokenizer, feature_cache):
    examples = D.load_split("xnli", "validation", toy_dir)["de"]
    feats = featurize("pair_classification", examples, toy_tokenizer, 64)
    plain, loaded = epoch_batches(feats, 16, 1, seed=3), epoch_batches(feats, 16, 1, seed=3, workers=2)
    for _ in range(30):  # more than one epoch (200 examples / 16)
        a, b = next(plain), next(loaded)
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_second_trial_tokenises_nothing(toy_dir, cache, tmp_path, monkeypatch):
    """Another trial on the same data (another phase-2 learning rate: phases 2 and 3 are recomputed) reads
    every tokenised feature from the cache: the tokenizer is never called."""
    from trainables import pipeline
    from trainables.config import load_config

    local = tmp_path / "cache"
    local.mkdir()
    for toy in Path(cache).glob("toy-model-*"):
        shutil.copytree(toy, local / toy.name)
    common = [f"data_dir={toy_dir}", f"cache_dir={local}", "targets=[xnli,udpos,mlqa,bucc2018]", "tracking.enabled=false",
              "intermediate.steps=20", "target.epochs={xnli: 1, udpos: 1, mlqa: 1}", "target.max_train_examples=60"]
    first = pipeline.run_pipeline(load_config(ROOT / "configs/pipeline/toy.yaml", common), log=lambda *a: None)
    calls = []
    real_load = pipeline.load_tokenizer

    class Counting:
        def __init__(self, tok):
            self._tok = tok

        def __call__(self, *args, **kwargs):
            calls.append(args[0] if args else kwargs)
            return self._tok(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._tok, name)

    monkeypatch.setattr(pipeline, "load_tokenizer", lambda *a, **k: Counting(real_load(*a, **k)))
    second = pipeline.run_pipeline(load_config(ROOT / "configs/pipeline/toy.yaml", common + ["intermediate.lr=2.0e-4"]),
                                   log=lambda *a: None)
    assert second["phase2"]["cache_hit"] is False and second["phase3_cache_hits"] == 0  # really a new trial
    assert calls == [], f"the tokenizer was called {len(calls)} times"
    assert second["targets"].keys() == first["targets"].keys()
