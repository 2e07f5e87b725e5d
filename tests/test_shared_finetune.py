"""XQuAD and MLQA share one SQuAD v1.1 fine-tune per encoder (XTREME trains one model and evaluates it on both):
`trainables.pipeline.finetune_group`. Each target keeps its own cache entry, results and selection note, and
its scores are the same whether it runs alone or beside the other.

Run: pytest tests/test_shared_finetune.py   (a tiny encoder on the toy's QA; ~1 min)
"""

from pathlib import Path

import pytest

import trainables.pipeline as P
from trainables.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def _cfg(toy_dir, base, cache, *extra):
    return load_config(ROOT / "configs/pipeline/toy.yaml", [
        f"data_dir={toy_dir}", f"cache_dir={cache}", f"model.name={base}", "intermediate.mixture={}",
        "target.max_train_examples=48", "target.epochs={xquad: 1, mlqa: 1}", "target.max_eval_examples=24",
        "target.lr=1.0e-3", "tracking.enabled=false", "data_workers=0", *extra])


def test_the_squad_targets_form_one_group_and_only_while_they_train_alike(toy_dir):
    cfg = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={toy_dir}"])
    assert P.finetune_group(cfg, "mlqa") == P.finetune_group(cfg, "xquad") == ("xquad", "mlqa")
    assert all(P.finetune_group(cfg, t) == (t,) for t in ("xnli", "pawsx", "udpos", "panx", "tydiqa", "bucc2018"))
    apart = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={toy_dir}", "target.epochs={xquad: 3}"])
    assert P.finetune_group(apart, "mlqa") == ("mlqa",) and P.finetune_group(apart, "xquad") == ("xquad",)


@pytest.mark.slow
def test_one_finetune_serves_xquad_and_mlqa_with_the_scores_each_gets_alone(toy_dir, tiny_mlm_base, tmp_path,
                                                                             monkeypatch):
    runs = []
    real = P.finetune_target
    monkeypatch.setattr(P, "finetune_target", lambda cfg, task, *a, **k: runs.append(task.name) or real(cfg, task, *a, **k))
    together = P.run_pipeline(_cfg(toy_dir, tiny_mlm_base, tmp_path / "both", "targets=[xquad,mlqa]"),
                              log=lambda *a: None)
    assert runs == ["mlqa"]  # MLQA comes first (it has a validation split); XQuAD is evaluated with its model
    alone = {}
    for name in ("xquad", "mlqa"):
        alone[name] = P.run_pipeline(_cfg(toy_dir, tiny_mlm_base, tmp_path / name, f"targets=[{name}]"),
                                     log=lambda *a: None)["targets"][name]
    assert runs == ["mlqa", "xquad", "mlqa"]
    for name in ("xquad", "mlqa"):
        assert together["targets"][name]["languages"] == alone[name]["languages"]
        assert together["targets"][name]["notes"]["selection"] == alone[name]["notes"]["selection"]
    # a second run reads both from their own cache entries
    again = P.run_pipeline(_cfg(toy_dir, tiny_mlm_base, tmp_path / "both", "targets=[xquad,mlqa]"),
                           log=lambda *a: None)
    assert runs == ["mlqa", "xquad", "mlqa"] and again["targets"] == together["targets"]
