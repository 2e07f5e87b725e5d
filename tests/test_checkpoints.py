"""A job killed mid-training (a preempted single-GPU trial) resumes from its last checkpoint, not from step 0,
and ends with exactly what an uninterrupted run gives; its checkpoints are gone once the cache entry is published.

The process is really SIGKILLed (right after a checkpoint is written), then the same pipeline runs again in a new
process. Dropout stays on: the checkpoint carries the RNG state, so the resumed run draws the same dropout masks.
Run: pytest tests/test_checkpoints.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, os, signal, sys
import torch
from trainables import checkpoints
from trainables.config import load_config
from trainables.pipeline import Pipeline

kill_at = os.environ.get("KILL_AT")  # "<job kind>:<step>": SIGKILL this process right after that checkpoint
if kill_at:
    kind, at = kill_at.split(":")
    save = checkpoints.LocalHooks.save

    def save_then_die(self, model, optimizer, scheduler, step, extra):
        save(self, model, optimizer, scheduler, step, extra)
        if self.folder.name.startswith(kind) and step == int(at):
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoints.LocalHooks.save = save_then_die
restore = checkpoints.LocalHooks.restore


def restore_and_say(self, *args):
    step, extra = restore(self, *args)
    print(f"RESTORED {self.folder.name.split('-')[0]} {step} {sorted(extra)}", flush=True)
    return step, extra


checkpoints.LocalHooks.restore = restore_and_say
torch.set_num_threads(1)
cfg = load_config(sys.argv[1], sys.argv[2:])
pipe = Pipeline(cfg, log=lambda *a: None).prepare()
out = {"phase2": {k: pipe.phase2.get(k) for k in ("resumed_at", "steps", "final_loss")},
       "targets": {r.name: r.splits for r in pipe.targets()}}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def tiny_base(toy_dir, tmp_path_factory):
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    tok = AutoTokenizer.from_pretrained(str(toy_dir / "tokenizer"))
    torch.manual_seed(0)
    model = XLMRobertaModel(XLMRobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64,
                                             pad_token_id=tok.pad_token_id), add_pooling_layer=False)
    out = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def _run(toy_dir, base, cache: Path, kill_at: str | None = None) -> tuple[int, dict | None]:
    args = [sys.executable, "-c", SCRIPT, str(ROOT / "configs/pipeline/toy.yaml"), f"data_dir={toy_dir}",
            f"cache_dir={cache}", f"model.name={base}", "intermediate.mixture={mnli: 1.0}", "intermediate.steps=40",
            "intermediate.batch_size=8", "checkpoint.steps=10", "targets=[xnli]", "target.max_train_examples=64",
            "target.epochs={xnli: 3}", "target.batch_size=8", "target.max_eval_examples=40", "tracking.enabled=false",
            "target.selection={every_steps: 8}",  # validations at the epoch ends: steps 8, 16, 24
            "progress=false", "eval_splits=[validation]"]
    env = {k: v for k, v in os.environ.items() if k != "KILL_AT"}
    if kill_at:
        env["KILL_AT"] = kill_at
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    result = json.loads(lines[-1][len("RESULT "):]) if lines else None
    if result is not None:
        result["restored"] = [l.split(" ", 1)[1] for l in out.stdout.splitlines() if l.startswith("RESTORED ")]
    return out.returncode, result


def _encoder(cache: Path) -> dict:
    from transformers import AutoModel

    (entry,) = cache.glob("phase2-*[!.]")
    return AutoModel.from_pretrained(str(entry), add_pooling_layer=False).state_dict()


@pytest.mark.slow
def test_a_killed_phase2_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(toy_dir, tiny_base, tmp_path):
    code, straight = _run(toy_dir, tiny_base, tmp_path / "a")
    assert code == 0 and straight["phase2"]["resumed_at"] == 0
    killed, _ = _run(toy_dir, tiny_base, tmp_path / "b", kill_at="phase2:20")
    assert killed == -9  # really killed, mid-phase-2
    (ckpt,) = (tmp_path / "b" / "checkpoints").glob("phase2-*")
    assert torch.load(ckpt / "checkpoint.pt", weights_only=True)["step"] == 20
    code, resumed = _run(toy_dir, tiny_base, tmp_path / "b")
    assert code == 0 and resumed["phase2"]["resumed_at"] == 20 and resumed["phase2"]["steps"] == 40
    assert "phase2 20 []" in resumed["restored"] and straight["restored"] == ["phase2 0 []", "phase3 0 []"]
    a, b = _encoder(tmp_path / "a"), _encoder(tmp_path / "b")
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0  # bit for bit: data, RNG and optimiser resumed
    assert resumed["targets"] == straight["targets"]
    assert not list((tmp_path / "b" / "checkpoints").iterdir())  # dropped once the entry was published


@pytest.mark.slow
def test_a_killed_phase3_finetune_resumes_with_its_best_epoch(toy_dir, tiny_base, tmp_path):
    """Phase 3 keeps its best epoch so far in its own file, written when it changes (not in every checkpoint);
    a resumed fine-tune restores it and selects the same epoch."""
    code, straight = _run(toy_dir, tiny_base, tmp_path / "a")
    assert code == 0
    killed, _ = _run(toy_dir, tiny_base, tmp_path / "b", kill_at="phase3:20")  # epochs end at steps 8, 16, 24
    assert killed == -9
    (ckpt,) = (tmp_path / "b" / "checkpoints").glob("phase3-*")
    extras = sorted(p.name for p in ckpt.glob("extra-*.pt"))
    assert len(extras) == 1 and torch.load(ckpt / "checkpoint.pt", weights_only=True)["step"] == 20, extras
    code, resumed = _run(toy_dir, tiny_base, tmp_path / "b")
    assert code == 0 and resumed["targets"] == straight["targets"]
    # it resumed at step 20, with the selection state: best score, model and step, validations since, all scores
    assert "phase3 20 ['best_step', 'history', 'score', 'since', 'state']" in resumed["restored"], resumed["restored"]
    assert not list((tmp_path / "b" / "checkpoints").iterdir())
