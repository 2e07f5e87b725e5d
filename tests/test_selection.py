"""Phase-3 model selection as jiant's runner does it (`jiant/proj/main/metarunner.py`: `should_eval_model`,
`eval_save`, `should_break_training`, `done_training`; the XTREME recipe's `--eval_every_steps 1000
--no_improvements_for_n_evals 30`, `eval_subset_num 500`): validate every `every_steps` optimiser steps and after
the last, on the first `subset` English selection examples, keep the strictly best model, stop once `patience`
validations passed without improvement.

Run: pytest tests/test_selection.py   (a tiny encoder on the toy's XNLI; ~1 min)
"""

from pathlib import Path

import pytest
import torch

from trainables.config import load_config
from trainables.model import load_tokenizer
from trainables.pipeline import evaluate_one, finetune_target, load_target
from trainables.tasks import TASKS
from trainables.metrics import primary

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def _finetune(toy_dir, base, tmp_path, *overrides):
    cfg = load_config(ROOT / "configs/pipeline/toy.yaml", [
        f"data_dir={toy_dir}", f"cache_dir={tmp_path / 'c'}", f"model.name={base}", "targets=[xnli]",
        "target.max_train_examples=40", "target.batch_size=8", "target.epochs={xnli: 3}", "target.lr=1.0e-3",
        "tracking.enabled=false", "data_workers=0", *overrides])
    entry = load_target("xnli", toy_dir)
    tok = load_tokenizer(base)
    model, note = finetune_target(cfg, TASKS["xnli"], base, tok, entry, CPU, cfg.seed)
    dev = entry["selection"][:cfg.target.selection.subset]
    return model, note, lambda m: primary(evaluate_one(m, TASKS["xnli"], dev, tok, cfg, CPU, entry["labels"], "en"))


@pytest.mark.slow
def test_validates_every_k_steps_and_after_the_last_and_keeps_the_best(toy_dir, tiny_mlm_base, tmp_path):
    """200 examples at batch 8 for 3 epochs: 75 steps; every 7 steps: validations at 7, 14, ..., 70 and at 75 (the
    last, as jiant's done_training). The model handed back is the best validation's, not the last one's."""
    model, note, score = _finetune(toy_dir, tiny_mlm_base, tmp_path, "target.max_train_examples=200",
                                   "target.lr=3.0e-3", "target.selection={every_steps: 7, subset: 100, patience: 0}")
    steps = [step for step, _ in note["history"]]
    assert steps == [7, 14, 21, 28, 35, 42, 49, 56, 63, 70, 75] and note["steps"] == note["planned_steps"] == 75
    assert note["subset"] == 100
    values = [value for _, value in note["history"]]
    best = max(values)
    assert values[-1] < best, values  # (what makes this test able to tell the best model from the last)
    assert note["best_step"] == steps[values.index(best)]  # the first of equals: only a strictly better one wins
    assert score(model) == pytest.approx(best)


@pytest.mark.slow
def test_patience_stops_the_run_after_validations_without_improvement(toy_dir, tiny_mlm_base, tmp_path):
    """A learning rate too small to change anything: the first validation is the best, the next ones only equal
    it; with patience 3 the run stops at the third of those (step 8 of 15), as jiant's should_break_training."""
    _, note, _ = _finetune(toy_dir, tiny_mlm_base, tmp_path, "target.lr=1.0e-12",
                           "target.selection={every_steps: 2, subset: 60, patience: 3}")
    assert [step for step, _ in note["history"]] == [2, 4, 6, 8]
    assert len({value for _, value in note["history"]}) == 1
    assert (note["best_step"], note["steps"], note["planned_steps"]) == (2, 8, 15)


def test_selection_settings_are_part_of_the_phase3_key(toy_dir, tmp_path):
    """Another selection rule gives another model: it must not be read back from the cache as the same."""
    from trainables.pipeline import phase3_entry

    keys = set()
    for rule in ("{every_steps: 13}", "{every_steps: 7}", "{every_steps: 13, patience: 2}", "{subset: 100}"):
        cfg = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={toy_dir}", f"cache_dir={tmp_path}",
                                                              f"target.selection={rule}"])
        keys.add(phase3_entry(cfg, "xnli", toy_dir, toy_dir, CPU).key)
    assert len(keys) == 4
