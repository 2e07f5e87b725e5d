"""The toy benchmark: deterministic, in the Hub's schemas, readable by the same loader as real data.

Run: pytest tests/test_toy.py
"""

import hashlib
import json

import pyarrow.parquet as pq
import pytest

from trainables import data
from trainables.tasks import TASKS
from trainables.toy import write_toy


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow  # seconds of training or a subprocess: not the fast layer
def test_same_seed_byte_identical_other_seed_differs(tmp_path, toy_dir):
    a = _digest(write_toy(tmp_path / "a", seed=0))
    assert a == _digest(toy_dir)
    b = _digest(write_toy(tmp_path / "b", seed=1))
    assert a.keys() == b.keys()
    assert a["nyu-mll/glue/mnli/train.parquet"] != b["nyu-mll/glue/mnli/train.parquet"]


def _columns(path):
    if path.suffix == ".parquet":
        return set(pq.read_schema(path).names)
    return set(json.loads(path.read_text().splitlines()[0]))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_columns_equal_hub_schema(toy_dir, task):
    seen = 0
    for source in TASKS[task].sources:
        if source.raw:  # a raw release layout (BUCC's sample corpora), not a Hub schema
            assert any((toy_dir / source.hub_id).rglob("*.gold")), f"no toy {source.hub_id} raw files"
            continue
        for path in (toy_dir / source.hub_id).rglob("*"):
            if path.is_file() and (not source.per_language or path.parent.name != source.config):
                config = path.parent.relative_to(toy_dir / source.hub_id).as_posix()
                if source.per_language and not any(config == source.config_for(l) for l in TASKS[task].languages):
                    continue
                if not source.per_language and config != source.config:
                    continue
                assert _columns(path) == set(source.columns), path
                seen += 1
    assert seen, f"no toy files for {task}"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_has_english_and_a_derived_language(toy_dir, task):
    report = data.inspect(task, toy_dir)
    eval_langs = set()
    for split in ("validation", "test"):
        eval_langs |= set(report["splits"].get(split, {}))
    if TASKS[task].role == "target":
        assert eval_langs & {"de", "ru", "hi"}, report
        assert eval_langs <= set(TASKS[task].languages)
        if TASKS[task].kind != "retrieval":
            assert report["splits"]["train"]["en"] >= 100
    else:
        assert report["splits"]["train"]["en"] >= 1000


def test_toy_world_has_scripts_and_word_orders(toy_dir):
    xnli = data.load_split("xnli", "validation", toy_dir)
    assert any("\u0400" <= ch <= "\u04ff" for ch in xnli["ru"][0]["text_a"])  # Cyrillic
    assert any("\u0900" <= ch <= "\u097f" for ch in xnli["hi"][0]["text_a"])  # Devanagari
    pos = data.load_split("udpos", "validation", toy_dir)
    # verb-final: the last word before the full stop is the verb in hi, not in en
    assert all(ex["tags"][-2] == "VERB" for ex in pos["hi"])
    assert not all(ex["tags"][-2] == "VERB" for ex in pos["en"])
    manifest = json.loads((toy_dir / "xstilts.json").read_text())
    assert manifest["languages"] == ["en", "de", "ru", "hi"]


def test_toy_tokenizer_round_trips(toy_tokenizer):
    ids = toy_tokenizer("anna sees the red fox")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and toy_tokenizer.pad_token_id == 1
    assert toy_tokenizer.decode(ids, skip_special_tokens=True) == "anna sees the red fox"


@pytest.mark.slow  # seconds of training or a subprocess: not the fast layer
def test_toy_model_is_the_same_whatever_threads_the_machine_gives(toy_dir, tmp_path):
    """Same seed, same toy model, bit for bit, whether the process had 1 thread or 2 (a float sum's order
    depends on the kernel's split over threads; the build pins its own count, `toymodel.TOY_THREADS`)."""
    import hashlib

    import torch

    from trainables.config import ModelConfig
    from trainables.toymodel import toy_model

    small = ModelConfig(hidden_size=32, layers=2, heads=2, mlm_steps=30, align_every=5)
    before, digests = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            path = toy_model(toy_dir, tmp_path / str(threads), small, log=lambda *a: None)
            digests.append(hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest())
            assert torch.get_num_threads() == threads  # the build restores the caller's count
    finally:
        torch.set_num_threads(before)
    assert digests[0] == digests[1]


@pytest.mark.slow
def test_alignment_steps_make_toy_retrieval_find_translations(toy_dir, tmp_path):
    """The toy model's translation-ranking steps (model.align_every) are what lets retrieval find a sentence's
    translation: Tatoeba-style top-1 at the retrieval layer, far above an MLM-only model of the same budget."""
    import torch

    from trainables.config import ModelConfig
    from trainables.model import load_encoder, load_tokenizer, mean_pool, retrieval_layer_index
    from trainables.toymodel import toy_model

    def accuracy(model_cfg: ModelConfig, cache) -> float:
        path = toy_model(toy_dir, cache, model_cfg, log=lambda *a: None)
        enc, tok = load_encoder(path).eval(), load_tokenizer(path)
        rows = pq.read_table(toy_dir / "google/xtreme/tatoeba.deu/validation.parquet").to_pylist()

        def embed(sentences):
            batch = tok([s.strip() for s in sentences], padding=True, return_tensors="pt")
            with torch.no_grad():
                states = enc(**batch, output_hidden_states=True).hidden_states[
                    retrieval_layer_index(model_cfg.retrieval_layer, model_cfg.layers)]
            return torch.nn.functional.normalize(mean_pool(states, batch["attention_mask"]), dim=-1)

        sim = embed([r["target_sentence"] for r in rows]) @ embed([r["source_sentence"] for r in rows]).T
        return float((sim.argmax(1) == torch.arange(len(rows))).float().mean()) * 100

    base = {"hidden_size": 64, "layers": 2, "heads": 2, "mlm_steps": 400}
    aligned = accuracy(ModelConfig(**base, align_every=4), tmp_path / "a")
    mlm_only = accuracy(ModelConfig(**base, align_every=0), tmp_path / "b")
    assert aligned > 30 and aligned > mlm_only + 20, (aligned, mlm_only)
