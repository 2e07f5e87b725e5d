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


@pytest.mark.parametrize("locks", ["flock", "mkdir", "flock refused"])
def test_concurrent_builders_compute_an_entry_once(tmp_path, monkeypatch, locks):
    """With flock; with lock folders (XSTILTS_LOCKS=mkdir, for mounts whose flock is node-local); and where the
    file system refuses flock (ENOLCK, as Lustre/NFS mounted without lock support do): the lock folder again."""
    import errno
    import fcntl

    if locks == "mkdir":
        monkeypatch.setenv("XSTILTS_LOCKS", "mkdir")
    if locks == "flock refused":
        def refuse(fh, op):
            raise OSError(errno.ENOLCK, "No locks available")

        monkeypatch.setattr(fcntl, "flock", refuse)
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


def test_two_hosts_temporary_names_differ(tmp_path, monkeypatch):
    """Two nodes whose builders have the same PID still build into different folders."""
    import socket

    seen = []

    def build(tmp):
        seen.append(tmp.name)
        raise RuntimeError("stop here")

    for name in ("node-a", "node-b"):
        monkeypatch.setattr(socket, "gethostname", lambda name=name: name)
        with pytest.raises(RuntimeError):
            Cache(tmp_path).entry("t", {"k": 4}).get_or_build(build)
    assert len(set(seen)) == 2 and "node_a" in seen[0] and "node_b" in seen[1], seen


def test_cleanup_never_touches_a_live_build_on_another_node(tmp_path):
    """A `*.tmp-*` folder of another host is removed only once its heartbeat is older than STALE_AFTER_S (by
    the file system's clock); a fresh one is a live build and stays."""
    import os

    from trainables.cache import HEARTBEAT, STALE_AFTER_S

    entry = Cache(tmp_path).entry("t", {"k": 5})
    live = entry.path.with_name(entry.path.name + ".tmp-othernode-4242-0a0b0c0d")
    dead = entry.path.with_name(entry.path.name + ".tmp-thirdnode-4243-0e0f0a0b")
    for folder in (live, dead):
        folder.mkdir(parents=True)
        (folder / HEARTBEAT).write_text("{}")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(dead / HEARTBEAT, (old, old))
    path, meta, hit = entry.get_or_build(lambda tmp: (tmp / "x").write_text("x") and {"ok": 1})
    assert not hit and live.exists() and not dead.exists() and (path / "x").exists()
    assert not (path / HEARTBEAT).exists() and meta == {"ok": 1}


def test_a_build_published_first_by_another_node_is_kept(tmp_path):
    """Where a lock is only node-local, two nodes may build one key: the first entry published stays."""
    entry = Cache(tmp_path).entry("t", {"k": 6})

    def build(tmp):  # another node publishes while this one builds
        other = tmp_path / "other"
        other.mkdir()
        (other / "x").write_text("theirs")
        Cache(tmp_path).entry("t", {"k": 6})._publish(other, {"who": "them"})
        (tmp / "x").write_text("ours")
        return {"who": "us"}

    path, meta, hit = entry.get_or_build(build)
    assert meta == {"who": "them"} and (path / "x").read_text() == "theirs"
    assert not list(tmp_path.glob("t-*.tmp-*"))


def test_the_temperature_reaches_the_phase2_key_only_through_the_probabilities(toy_dir, tmp_path):
    """A single task trains the same at any temperature (probability 1): one entry. Two tasks at other
    temperatures get other probabilities, so other entries."""
    from trainables.mixture import Mixture

    def key(mixture: dict, temperature: float) -> str:
        cfg = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={toy_dir}", f"intermediate.mixture={mixture}",
                                                              f"intermediate.temperature={temperature}"])
        probs = Mixture(mixture, "explicit", temperature).probabilities()
        return Cache(tmp_path).entry("phase2", phase2_payload(cfg, "toy-model-x", probs, toy_dir, CPU)).key

    assert key({"mnli": 1.0}, 0.5) == key({"mnli": 1.0}, 2.0)
    assert key({"mnli": 1.0, "qqp": 0.5}, 0.5) != key({"mnli": 1.0, "qqp": 0.5}, 2.0)
