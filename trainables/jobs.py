"""Jobs that a launcher runs on each of several workers: phase 2, and one phase-3 target.

A job is a small JSON-able dict (the config and paths: every worker loads its own data from the shared
data_dir), so Ray Train can ship it to its workers (search/distributed.py). `run_job(job, hooks)` runs the
same code as one process does, on this worker's rows of every global batch; `hooks` restore and save sharded
checkpoints. Rank 0's return value is the job's result: phase 2 a summary (rank 0 also wrote the encoder to
`job["out"]`), phase 3 each target's {"splits", "notes"} (targets that share one fine-tune: `finetune_group`).
"""

from __future__ import annotations

from pathlib import Path

from trainables import data as D
from trainables import featcache, progress
from trainables.config import update, validate
from trainables.distributed import device_for
from trainables.mixture import Mixture
from trainables.model import load_tokenizer
from trainables.train import Hooks


def run_job(job: dict, hooks: Hooks | None = None):
    from trainables.phase2 import mixture_sizes, train_phase2
    from trainables.pipeline import compute_targets, load_target

    cfg = validate(job["cfg"], "job config")
    featcache.use(cfg.cache_dir)
    progress.switch(cfg.progress)
    device = device_for(cfg.device)
    if job["kind"] == "phase2":
        data_dir = Path(job["data_dir"]) if job["data_dir"] else None
        tok = load_tokenizer(job["base"], cfg.model.revision)
        examples, _ = D.load_mixture(cfg.intermediate.mixture, data_dir)
        ic = cfg.intermediate
        mixture = Mixture(ic.mixture, ic.sampler, ic.temperature, ic.cap)
        probs = mixture.probabilities(mixture_sizes(cfg, tok, examples))
        return train_phase2(cfg, job["base"], tok, examples, mixture, probs, device, data_dir, lambda *a: None,
                            Path(job["out"]), hooks)
    if job["kind"] == "phase3":
        names = list(job["targets"])
        cfg = update(cfg, {"targets": names}, "job config")
        data_dir = Path(cfg.data_dir) if cfg.data_dir else None
        entries = {name: load_target(name, data_dir) for name in names}
        return compute_targets(cfg, names, job["encoder"], load_tokenizer(job["encoder"]), entries, hooks)
    raise ValueError(f"unknown job kind {job['kind']!r}")
