"""The content-addressed cache: keys change exactly when what they cache would change; entries are built
once under a lock, atomically, and rebuilt when broken. Run: pytest tests/test_cache_keys.py"""

import multiprocessing
import shutil
import time
from pathlib import Path

import pytest
import torch

import hub_fixtures
from trainables.cache import Cache
from trainables.config import load_config
from trainables.phase2 import phase2_payload
from trainables.pipeline import phase3_entry

ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _copy(toy_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(toy_dir, data)
    return data


def test_phase3_key_follows_the_targets_own_data(toy_dir, tmp_path):
    data = _copy(toy_dir, tmp_path)
    cfg = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={data}", f"cache_dir={tmp_path}"])
    key = lambda: phase3_entry(cfg, "xnli", "phase2-abc", data, CPU).key  # noqa: E731
    before = key()
    with (data / "google/xtreme/PAN-X.de/test.parquet").open("ab") as fh:  # another task's file
        fh.write(b"\0")
    assert key() == before
    with (data / "facebook/xnli/de/test.parquet").open("ab") as fh:  # an XNLI evaluation file
        fh.write(b"\0")
    assert key() != before
    assert phase3_entry(cfg, "xnli", "phase2-abd", data, CPU).key != key()  # another encoder
    assert phase3_entry(cfg, "xnli", "phase2-abc", data, CUDA).key != key()  # bf16 on a GPU: other numbers


def test_phase3_key_follows_content_not_only_size(toy_dir, tmp_path):
    data = _copy(toy_dir, tmp_path)
    cfg = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={data}", f"cache_dir={tmp_path}"])
    before = phase3_entry(cfg, "xnli", "phase2-abc", data, CPU).key
    path = data / "nyu-mll/glue/mnli/train.parquet"  # XNLI's English training set
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(raw))
    assert phase3_entry(cfg, "xnli", "phase2-abc", data, CPU).key != before


def test_phase2_key_covers_translated_data_and_mlm_corpus(toy_dir, tmp_path):
    data = _copy(toy_dir, tmp_path)
    translated = hub_fixtures.write(tmp_path / "translated", {"nyu-mll/glue/mnli/train.parquet": [
        {"premise": "a", "hypothesis": "b", "label": 0, "idx": 0}]}, ["de"])
    cfg = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={data}", "intermediate.mlm.weight=0.2",
                                                          f"intermediate.translated_dir={translated}"])
    key = lambda c=cfg, d=CPU: Cache(tmp_path).entry("phase2", phase2_payload(c, "toy-model-x", {"mnli": 1.0}, data, d)).key  # noqa: E731
    before = key()
    with (data / "mlm/corpus.txt").open("a") as fh:
        fh.write("one more line\n")
    after_corpus = key()
    hub_fixtures.write(translated, {"nyu-mll/glue/mnli/train.parquet": [
        {"premise": "a", "hypothesis": "c", "label": 0, "idx": 0}]}, ["de"])
    after_translated = key()
    assert len({before, after_corpus, after_translated}) == 3
    assert key(d=CUDA) != after_translated
    no_mlm = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={data}"])
    k1 = key(no_mlm)
    with (data / "mlm/corpus.txt").open("a") as fh:  # the corpus is not read without MLM mixing
        fh.write("and another\n")
    assert key(no_mlm) == k1


def _build_slowly(root: str, out: multiprocessing.Queue) -> None:
    def build(tmp):
        time.sleep(1.0)
        (tmp / "x").write_text("x")
        return {"pid": __import__("os").getpid()}

    _, meta, hit = Cache(root).entry("t", {"k": 1}).get_or_build(build)
    out.put((meta["pid"], hit))


def test_concurrent_builders_compute_an_entry_once(tmp_path):
    q = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_build_slowly, args=(str(tmp_path), q)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    got = [q.get(timeout=5) for _ in procs]
    assert len({pid for pid, _ in got}) == 1  # one builder; the others read its entry
    assert sorted(hit for _, hit in got) == [False, True, True]


def test_a_killed_builder_leaves_nothing_that_is_used(tmp_path):
    entry = Cache(tmp_path).entry("t", {"k": 2})
    stale = entry.path.with_name(entry.path.name + ".tmp-999999")  # a builder SIGKILLed mid-write
    stale.mkdir(parents=True)
    (stale / "half").write_text("half")
    assert entry.get() is None
    path, meta, hit = entry.get_or_build(lambda tmp: (tmp / "full").write_text("full") and {"ok": True})
    assert not hit and meta == {"ok": True} and not stale.exists() and (path / "full").exists()


def test_a_failed_build_writes_nothing(tmp_path):
    entry = Cache(tmp_path).entry("t", {"k": 3})

    def boom(tmp):
        (tmp / "partial").write_text("p")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        entry.get_or_build(boom)
    assert not entry.path.exists() and not list(tmp_path.glob("t-*.tmp-*"))
