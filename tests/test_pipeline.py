"""The three-phase pipeline on the toy benchmark, on CPU, without Ray.

Slow-ish (the toy model's MLM is built once per session, ~2 min on 2 cores). Run: pytest tests/test_pipeline.py
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainables.config import load_config
from trainables.metrics import xtreme_score
from trainables.pipeline import base_model, finetune_target, load_all, run_pipeline
from trainables.tasks import TARGETS, TASKS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def toy_cfg(toy_dir, cache, *overrides):
    return load_config(ROOT / "configs/pipeline/toy.yaml",
                       [f"data_dir={toy_dir}", f"cache_dir={cache}", "tracking.enabled=false", *overrides])


@pytest.fixture(scope="session")
def full_run(toy_dir, cache):
    return run_pipeline(toy_cfg(toy_dir, cache), log=lambda *a: None)


def test_all_nine_targets_with_every_metric(full_run):
    assert set(full_run["targets"]) == set(TARGETS)
    for name, entry in full_run["targets"].items():
        keys = {"exact_match", "f1"} if TASKS[name].kind == "span_qa" else {TASKS[name].metric}
        assert entry["languages"], name
        for lang, values in entry["languages"].items():
            assert set(values) == keys, (name, lang)
            assert all(0.0 <= v <= 100.0 for v in values.values())
    assert set(full_run["targets"]["xnli"]["languages"]) == {"en", "de", "ru", "hi"}


def test_average_equals_the_score_of_its_own_values_and_is_never_called_xtreme(full_run):
    """Nine targets, but the toy's four languages: an average of 9 targets, never XTREME (languages missing)."""
    per_lang = {t: e["languages"] for t, e in full_run["targets"].items()}
    assert full_run["average"] == pytest.approx(xtreme_score(per_lang)["average"])
    assert full_run["xtreme"] is None and full_run["missing"]["languages"]["xnli"][:2] == ["ar", "bg"]
    assert full_run["score_name"].startswith("average of 9 targets (not XTREME: languages scored: xnli 4 of 15")
    val = {t: e["languages"] for t, e in full_run["validation"]["targets"].items()}
    assert full_run["validation"]["xtreme"] is None
    assert full_run["validation"]["average"] == pytest.approx(xtreme_score(val)["average"])


def test_learning_happened_on_english(full_run):
    # chance: XNLI 33 %, PAWS-X 50 %; tagging far above a constant guess
    assert full_run["targets"]["xnli"]["languages"]["en"]["accuracy"] > 50
    assert full_run["targets"]["udpos"]["languages"]["en"]["f1"] > 60
    assert full_run["targets"]["panx"]["languages"]["en"]["f1"] > 60


def test_repeated_trial_trains_nothing(toy_dir, cache, full_run):
    again = run_pipeline(toy_cfg(toy_dir, cache, "targets=[tatoeba,xnli]"), log=lambda *a: None)
    assert full_run["phase2"]["cache_hit"] is False and again["phase2"]["cache_hit"] is True
    assert full_run["phase3_cache_hits"] == 0 and again["phase3_cache_hits"] == 2
    assert again["targets"]["xnli"] == full_run["targets"]["xnli"]
    assert again["phase2"]["dir"] == full_run["phase2"]["dir"]
    assert again["targets"]["tatoeba"] == full_run["targets"]["tatoeba"]


def test_planted_transfer_mnli_lifts_zero_shot_xnli(toy_dir, cache):
    """Toy MNLI teaches the relation toy XNLI needs: zero-shot XNLI beats the no-intermediate baseline.
    (Also fails if phase 3 silently reloaded the base model: both runs would then be identical.)"""
    base = run_pipeline(toy_cfg(toy_dir, cache, "targets=[xnli]", "intermediate.mixture={}"), log=lambda *a: None)
    mnli = run_pipeline(toy_cfg(toy_dir, cache, "targets=[xnli]", "intermediate.mixture={mnli: 1.0}"),
                        log=lambda *a: None)
    zero_shot = lambda r: sum(v["accuracy"] for l, v in r["targets"]["xnli"]["languages"].items() if l != "en") / 3
    assert base["phase2"]["skipped"] and not mnli["phase2"].get("skipped")
    assert zero_shot(mnli) > zero_shot(base) + 2.0, (zero_shot(mnli), zero_shot(base))


def test_phase3_starts_from_the_phase2_encoder(toy_dir, cache, full_run):
    """With a vanishing learning rate, the fine-tuned encoder equals the encoder it was given (phase 2's),
    which differs from the base model's."""
    cfg = toy_cfg(toy_dir, cache, "target.lr=1.0e-12", "target.epochs={xnli: 1}", "target.max_train_examples=16")
    phase2_dir = Path(full_run["phase2"]["dir"])
    data = load_all(cfg, toy_dir)
    from trainables.model import load_encoder, load_tokenizer

    tok = load_tokenizer(phase2_dir)
    model, _ = finetune_target(cfg, TASKS["xnli"], phase2_dir, tok, data["targets"]["xnli"], torch.device("cpu"), 0)
    phase2 = load_encoder(phase2_dir).state_dict()
    base = load_encoder(base_model(cfg, toy_dir, print)).state_dict()
    key = "embeddings.word_embeddings.weight"
    tuned = model.encoder.state_dict()[key]
    assert torch.allclose(tuned, phase2[key], atol=1e-6)
    assert not torch.allclose(tuned, base[key], atol=1e-4)


def test_cli_run_writes_json_and_mlflow(toy_dir, cache, tmp_path):
    out = tmp_path / "out.json"
    db = tmp_path / "mlflow.db"
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", "run", str(ROOT / "configs/pipeline/toy.yaml"), f"data_dir={toy_dir}",
         f"cache_dir={cache}", "targets=[tatoeba,pawsx]", f"tracking.uri=sqlite:///{db}", "--json", str(out)],
        capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert set(results["targets"]) == {"tatoeba", "pawsx"} and "average of 2 targets" in proc.stdout
    assert results["xtreme"] is None  # two targets are not XTREME
    from mlflow import MlflowClient

    run = MlflowClient(f"sqlite:///{db}").get_run(results["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert math.isclose(run.data.metrics["average"], results["average"], rel_tol=1e-9)
    assert "xtreme" not in run.data.metrics
    assert "target/pawsx/de/accuracy" in run.data.metrics and run.data.params["mix/mnli"] == "0.5"


def test_corrupted_phase2_entry_is_rebuilt(toy_dir, cache, full_run):
    entry = Path(full_run["phase2"]["dir"])
    weights = next(p for p in entry.iterdir() if p.name.endswith(".safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])  # a crash mid-copy, a full disk...
    import shutil

    for p in cache.glob("phase3-*"):  # make phase 3 really use the rebuilt encoder
        shutil.rmtree(p)
    again = run_pipeline(toy_cfg(toy_dir, cache, "targets=[tatoeba]"), log=lambda *a: None)
    assert again["phase2"]["cache_hit"] is False and again["phase2"]["dir"] == str(entry)
    from trainables.cache import MANIFEST

    assert json.loads((entry / MANIFEST).read_text())["files"]["model.safetensors"] == weights.stat().st_size
    assert again["targets"]["tatoeba"] == full_run["targets"]["tatoeba"]  # same inputs, same seed -> same encoder


def test_phase2_variants_mlm_mixing_and_translated_data(toy_dir, cache, tmp_path):
    """Continued multilingual MLM takes its share of phase-2 batches; translated data adds training examples."""
    import hub_fixtures

    translated = tmp_path / "translated"
    rows = [{"premise": "anna sieht den roten fuchs .", "hypothesis": "anna sieht den fuchs .", "label": 0, "idx": i}
            for i in range(50)]
    hub_fixtures.write(translated, {"nyu-mll/glue/mnli/train.parquet": rows}, ["de"])
    out = run_pipeline(toy_cfg(toy_dir, cache, "targets=[tatoeba]", "intermediate.mixture={mnli: 1.0}",
                               "intermediate.steps=40", "intermediate.mlm.weight=0.5",
                               f"intermediate.translated_dir={translated}"), log=lambda *a: None)
    p2 = out["phase2"]
    assert p2["examples"]["mnli"] == 3000 + 50  # the English set plus the translated rows
    assert 10 <= p2["batches"]["mlm"] <= 30 and p2["batches"]["mlm"] + p2["batches"]["mnli"] == 40
