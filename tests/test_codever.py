"""Cache keys carry the code that computed the entry (`trainables.codever`): a fix to the metrics renews every
phase-3 entry; a docstring or comment edit renews nothing.

Run: pytest tests/test_codever.py
"""

from pathlib import Path

import pytest

import trainables.codever as codever

ROOT = Path(__file__).resolve().parents[1]


def test_prose_edits_keep_the_digest_and_code_edits_change_it(tmp_path):
    original = (ROOT / "trainables/metrics.py").read_text()
    copy = tmp_path / "metrics.py"
    copy.write_text(original)
    before = codever.source_digest(copy)
    copy.write_text('"""Another module docstring."""\n# a comment\n' + original.split('"""', 2)[2])
    assert codever.source_digest(copy) == before
    copy.write_text(original.replace("def primary(", "def primary_(", 1))
    assert codever.source_digest(copy) != before


@pytest.mark.slow  # seconds: the fast layer stays under a minute
def test_a_metrics_fix_renews_phase3_keys_but_not_phase2_or_features(tmp_path, monkeypatch):
    """The phase-3 key follows metrics.py (via code_version), phase 2 and features do not read it."""
    src = tmp_path / "trainables"
    src.mkdir()
    for f in (ROOT / "trainables").glob("*.py"):
        (src / f.name).write_text(f.read_text())
    monkeypatch.setattr(codever, "__file__", str(src / "codever.py"))
    codever._code.cache_clear()
    before = {k: codever.code_version(k) for k in codever.MODULES}
    (src / "metrics.py").write_text((src / "metrics.py").read_text() + "\nFIXED = True\n")
    codever._code.cache_clear()
    after = {k: codever.code_version(k) for k in codever.MODULES}
    codever._code.cache_clear()
    assert after["phase3"] != before["phase3"]
    assert after["phase2"] == before["phase2"] and after["features"] == before["features"]
    assert set(before["phase3"]["libraries"]) == {"torch", "transformers", "tokenizers", "datasets"}
    assert before["phase3"]["libraries"]["torch"]  # installed, so its version is in every key


def test_every_entry_kind_puts_its_code_version_in_its_key(toy_dir, tmp_path, monkeypatch):
    import torch

    from trainables import featcache, model, phase2, pipeline
    from trainables.config import load_config

    cfg = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={toy_dir}", f"cache_dir={tmp_path}"])
    keys = lambda: (pipeline.phase3_entry(cfg, "xnli", toy_dir, toy_dir, torch.device("cpu")).key,  # noqa: E731
                    phase2.phase2_payload(cfg, "toy-model-x", {"mnli": 1.0}, toy_dir, torch.device("cpu"))["code"])
    before = keys()
    for module in (pipeline, phase2):
        monkeypatch.setattr(module, "code_version", lambda kind: {"source": "changed", "libraries": {}})
    after = keys()
    assert before[0] != after[0] and before[1] != after[1]
    # the toy model and the features name theirs too (read from their payload code)
    assert "code_version(\"toy-model\")" in (ROOT / "trainables/toymodel.py").read_text()
    assert "code_version(\"features\")" in (ROOT / "trainables/featcache.py").read_text()
