"""`xstilts plan SEARCH_PRESET` (search/price.py): a search priced before it runs.

Run: pytest tests/test_price.py
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search.config import load_search_config
from search.price import expected_rungs, mfu, price

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "docs/measurements"


def test_the_mfu_curve_passes_through_the_h200_measurements():
    """XLM-R Large, bf16, H200: 32 x 256 and 64 x 256 (benchmarks/gpu_check.py's figures, kept in docs/)."""
    a = json.loads((MEASURED / "gpu_check-h200-2026-11-26.json").read_text())["a"]
    probe = [json.loads(l) for l in (MEASURED / "gpu_check-probe-h200-2026-11-26.jsonl").read_text().splitlines()]
    (big,) = [p for p in probe if p["rows"] == 64 and not p["compiled"]]
    assert mfu(a["rows"] * a["seq"]) == pytest.approx(a["mfu"], rel=0.02)
    assert mfu(64 * 256) == pytest.approx(big["mfu"], rel=0.02)
    assert mfu(4 * 50) < 0.1 * mfu(32 * 256)  # what a 4-row step of short pairs wastes


def test_asha_reach_per_rung():
    """grace 3, reduction factor 3, 9 rungs: one cut, after rung 3 (milestones 3 and 9; 9 is the last rung); the
    mixture preset's grace 1: cuts after rungs 1 and 3."""
    cfg = load_search_config("mixture", ["scheduler={enabled: true, grace_period: 3, reduction_factor: 3}"])
    assert expected_rungs(cfg, 9) == [1, 1, 1] + [pytest.approx(1 / 3)] * 6
    preset = load_search_config("mixture")
    assert expected_rungs(preset, 9) == [1] + [pytest.approx(1 / 3)] * 2 + [pytest.approx(1 / 9)] * 6
    two = load_search_config("mixture", ["scheduler={enabled: true, grace_period: 1, reduction_factor: 2}"])
    assert expected_rungs(two, 5) == [1, 0.5, pytest.approx(0.25), pytest.approx(0.25), pytest.approx(0.125)]
    off = load_search_config("paper")
    assert expected_rungs(off, 9) == [1.0] * 9


def test_tiny_steps_cost_several_times_the_whole_batch():
    """The same paper grid with jiant's batch split 4 x 8 (2 x 8 for QA), as the presets were: several times the
    GPU-hours of one 32-row step (16 for QA)."""
    whole = price(load_search_config("paper"), 8, "h100")
    split = price(load_search_config("paper", ['overrides=["intermediate.sampler=proportional", '
                                               '"intermediate.batch_size=4", "intermediate.grad_accum=8", '
                                               '"target.batch_size=4", "target.qa_batch_size=2", '
                                               '"target.grad_accum=8"]']), 8, "h100")
    assert split["gpu_hours"] > 4 * whole["gpu_hours"], (split["gpu_hours"], whole["gpu_hours"])
    assert set(whole) >= {"gpu_hours", "wall_hours", "trials", "breakdown", "assumptions"}
    assert set(whole["breakdown"]) == {"phase2", "phase3", "evaluation", "retrieval"}
    assert whole["trials"] == 11 and whole["wall_hours"] >= whole["gpu_hours"] / 8


def test_xquad_and_mlqa_pay_for_one_squad_finetune():
    scfg = load_search_config("paper", ['overrides=["targets=[xquad,mlqa]"]'])
    phase3 = price(scfg, 8, "h100")["breakdown"]["phase3"]
    assert phase3["mlqa"] > 0 and phase3["xquad"] == 0  # MLQA's rung comes first: it runs the fine-tune
    apart = price(load_search_config("paper", ['overrides=["targets=[xquad,mlqa]", "target.epochs={xquad: 2.5}"]']),
                  8, "h100")["breakdown"]["phase3"]
    assert apart["xquad"] > 0 and apart["mlqa"] == pytest.approx(phase3["mlqa"], rel=0.01)


@pytest.mark.slow  # seconds of training or a subprocess: not the fast layer
def test_cli_prices_a_search_preset_and_a_scaling_study(tmp_path):
    out = subprocess.run([sys.executable, "-m", "search.cli", "plan", "mixture", "--gpus", "8", "--gpu-type", "h100",
                          "--json", str(tmp_path / "m.json")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["unit"] == "GPU-hours" and "MFU" in result["assumptions"]["throughput"]
    assert "wall clock" in out.stdout and "assumptions" in out.stdout
    study = subprocess.run([sys.executable, "-m", "search.cli", "plan", "scaling", "--gpus", "8", "--gpu-type",
                            "h100", "--json", str(tmp_path / "s.json")], capture_output=True, text=True, cwd=tmp_path)
    assert study.returncode == 0, study.stderr[-2000:]
    models = json.loads((tmp_path / "s.json").read_text())["models"]
    hours = [models[m]["gpu_hours"] for m in ("xlmr-base", "xlmr-large", "xlmr-xl", "xlmr-xxl")]
    assert hours == sorted(hours)  # bigger models cost more
    bad = subprocess.run([sys.executable, "-m", "search.cli", "plan", "mixture", "--gpu-type", "tpu"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "unknown --gpu-type 'tpu'" in bad.stderr


@pytest.mark.slow  # seconds of training or a subprocess: not the fast layer
def test_the_toy_is_priced_on_its_own_data_and_this_cpu(tmp_path, monkeypatch):
    """No toy data yet (a fresh clone): the toy benchmark is written to a scratch folder for its sizes, never the
    real datasets' table; the CPU's FLOP/s is measured here."""
    monkeypatch.chdir(tmp_path)
    result = price(load_search_config("toy", [f"storage={tmp_path / 'searches'}"]), 0, "cpu")
    a = result["assumptions"]
    assert result["unit"] == "CPU-hours" and "measured on this CPU" in a["throughput"]
    assert {"xnli/train", "mnli/train", "bucc2018/test"} <= set(a["sizes_measured_in_data_dir"])
    assert 0 < result["gpu_hours"] < 1  # minutes, not the real grid's hours
    assert not list(tmp_path.glob("searches/*"))  # nothing written where the search would live
