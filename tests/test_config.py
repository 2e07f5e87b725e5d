"""Configs: every preset under configs/ loads; bad configs fail before any training with one clear line.

Run: pytest tests/test_config.py
"""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainables.config import load_config
from trainables.errors import XstiltsError

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_PRESETS = sorted((ROOT / "configs" / "pipeline").rglob("*.yaml"))


def test_there_are_presets():
    assert len(PIPELINE_PRESETS) >= 3


@pytest.mark.parametrize("path", PIPELINE_PRESETS, ids=lambda p: p.name)
def test_every_pipeline_preset_loads(path):
    cfg = load_config(path)
    assert cfg.targets and path.read_text().startswith("#")  # a header that says how to run it


def test_overrides_are_typed():
    cfg = load_config(ROOT / "configs/pipeline/toy.yaml",
                      ["intermediate.lr=2.0e-5", "targets=[xnli,tatoeba]", "intermediate.mixture={qqp: 2}"])
    assert cfg.intermediate.lr == 2.0e-5 and cfg.targets == ["xnli", "tatoeba"]
    assert cfg.intermediate.mixture == {"qqp": 2.0}


@pytest.mark.parametrize("overrides, message", [
    (["intermediate.mixture={mnlii: 1.0}"], "unknown intermediate task 'mnlii' — choose from anli_plus"),
    (["intermediate.mixture={mnli: -1.0}"], "negative weight"),
    (["intermediate.mixture={mnli: 0, qqp: 0}"], "all mixture weights are zero"),
    (["targets=[xnli,nope]"], "unknown target 'nope'"),
    (["intermediate.learning_rate=1.0e-5"], "intermediate.learning_rate: unknown key"),
    (["intermediate.lr=-1"], "intermediate.lr: Input should be greater than 0"),
])
def test_bad_configs_fail_clearly(overrides, message):
    with pytest.raises(XstiltsError, match=message.replace("(", r"\(")):
        load_config(ROOT / "configs/pipeline/toy.yaml", overrides)


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: [toy\n")
    with pytest.raises(XstiltsError, match="malformed YAML .* line"):
        load_config(bad)


@pytest.mark.slow  # seconds of training or a subprocess: not the fast layer
def test_cli_rejects_bad_config_before_training(tmp_path):
    """Fails in well under the time a model load would take, with one line and exit status 2."""
    start = time.time()
    out = subprocess.run([sys.executable, "-m", "trainables", "run", str(ROOT / "configs/pipeline/toy.yaml"),
                          "intermediate.mixture={mnli: -2}", f"cache_dir={tmp_path}"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: ") and "negative weight" in out.stderr
    assert not any(tmp_path.iterdir())  # nothing written
    assert time.time() - start < 60


def test_target_without_training_data_fails_before_training(tmp_path):
    import hub_fixtures
    from trainables.pipeline import load_all

    rows = hub_fixtures.ROWS["google/xtreme/PAN-X.en/validation.parquet"]
    hub_fixtures.write(tmp_path, {"google/xtreme/PAN-X.en/validation.parquet": rows,
                                  "google/xtreme/PAN-X.en/test.parquet": rows}, ["en"])  # no train split
    cfg = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={tmp_path}", "targets=[panx]",
                                                           "intermediate.mixture={}"])
    with pytest.raises(XstiltsError, match="missing source offline: google/xtreme/PAN-X.en/train"):
        load_all(cfg, tmp_path)


def test_phase2_length_in_epochs_follows_jiants_rule():
    """jiant's configurator: steps = sum over tasks of epochs x ceil(min(n, cap) / (batch x grad_accum))."""
    cfg = load_config(ROOT / "configs/pipeline/toy.yaml", ["intermediate.steps=null", "intermediate.epochs=2",
                                                           "intermediate.batch_size=8", "intermediate.grad_accum=2",
                                                           "intermediate.cap=100"])
    assert cfg.intermediate.total_steps({"mnli": 1000, "squad_v1": 33}) == 2 * 7 + 2 * 3  # min(1000, 100)/16 -> 7
    with pytest.raises(XstiltsError, match="exactly one of intermediate.steps and intermediate.epochs"):
        load_config(ROOT / "configs/pipeline/toy.yaml", ["intermediate.epochs=2"])  # steps still set


def test_paper_presets_train_phase2_for_epochs():
    for name in ("xlmr_large_mnli.yaml", "xlmr_large_multitask.yaml"):
        cfg = load_config(ROOT / "configs/pipeline" / name)
        assert cfg.intermediate.steps is None and cfg.intermediate.epochs


def test_anli_plus_does_not_count_mnli_twice(tmp_path):
    """ANLI+ is ANLI + MNLI + SNLI: in a mixture with mnli, MNLI is read once, under mnli."""
    import hub_fixtures
    from trainables.data import load_mixture

    hub_fixtures.write(tmp_path)
    alone, _ = load_mixture({"anli_plus": 1.0}, tmp_path)
    both, dropped = load_mixture({"anli_plus": 1.0, "mnli": 1.0}, tmp_path)
    assert len(alone["anli_plus"]) == 6 and len(both["mnli"]) == 2
    assert len(both["anli_plus"]) == 6 - 2 and dropped == {"anli_plus": ["nyu-mll/glue/mnli"]}
    multitask = load_config(ROOT / "configs/pipeline/xlmr_large_multitask.yaml")
    assert {"anli_plus", "mnli"} <= set(multitask.intermediate.mixture)  # the preset relies on the rule above
