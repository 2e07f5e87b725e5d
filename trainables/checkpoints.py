"""Checkpoints of a job in progress, by wall time, kept only until the job's cache entry is published.

A job is phase 2 or one phase-3 fine-tune, named by its cache entry (`phase2-<key>`, `phase3-<key>`). An attempt
that dies (a preempted node, an OOM kill, a Ray retry) resumes from the job's last checkpoint, not from step 0:

  Scheduled(ccfg)            when a checkpoint is due: every `checkpoint.minutes` of wall time by rank 0's clock
                             (all workers agree: `distributed.rank0_says`), or every `checkpoint.steps` steps
  LocalHooks(folder, ccfg)   one process: model, optimiser, scheduler, step and torch RNG states, written atomically
                             with torch.save under `<cache_dir>/checkpoints/<job>/` and read back with
                             `weights_only=True`. Extra tensors (phase 3's best epoch so far) go to their own file,
                             written only when they change — not into every checkpoint
  drop(cache_dir, job)       remove a job's checkpoints (local and Ray Train's) once its entry is published

Ray Train workers checkpoint sharded with the same schedule (search/distributed.py `RayHooks`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from trainables.distributed import extra_version
from trainables.train import Hooks

CHECKPOINTS = "checkpoints"  # <cache_dir>/checkpoints/<job>: one process's checkpoints
TRAIN_RUNS = "ray-train"  # <cache_dir>/ray-train/<job>: a Ray Train run's sharded checkpoints


def local_folder(cache_dir: Path | str, job: str) -> Path:
    return Path(cache_dir) / CHECKPOINTS / job


def drop(cache_dir: Path | str, job: str) -> None:
    """Remove what a finished job checkpointed (its cache entry holds the result now)."""
    for folder in (Path(cache_dir) / CHECKPOINTS / job, Path(cache_dir) / TRAIN_RUNS / job):
        shutil.rmtree(folder, ignore_errors=True)


class Scheduled(Hooks):
    """A checkpoint every `minutes` of wall time (rank 0's clock, so every worker saves together), or every
    `steps` optimiser steps when set."""

    def __init__(self, ccfg):
        self.minutes, self.steps = ccfg.minutes, ccfg.steps
        self._last = time.monotonic()

    def due(self, step: int) -> bool:
        from trainables.distributed import rank0_says

        if self.steps:
            return step % self.steps == 0
        if rank0_says(time.monotonic() - self._last >= self.minutes * 60):
            self._last = time.monotonic()
            return True
        return False


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class LocalHooks(Scheduled):
    """Checkpoints of a job on one process (module docstring)."""

    def __init__(self, folder: Path | str, ccfg):
        super().__init__(ccfg)
        self.folder = Path(folder)
        self._written: dict[str, tuple] = {}  # extra tensors already on disk: key -> (version, file)

    def save(self, model, optimizer, scheduler, step: int, extra: dict) -> None:
        from trainables.distributed import unwrap

        self.folder.mkdir(parents=True, exist_ok=True)
        numbers = {k: v for k, v in extra.items() if not isinstance(v, dict)}
        files = {}
        for key, tensors in ((k, v) for k, v in extra.items() if isinstance(v, dict)):
            version = extra_version(tensors, numbers)
            if self._written.get(key, (None,))[0] != version:  # changed since the last checkpoint: write it once
                name = f"extra-{key}-{step:09d}.pt"
                _atomic_save(tensors, self.folder / name)
                self._written[key] = (version, name)
            files[key] = self._written[key][1]
        state = {"model": unwrap(model).state_dict(), "optim": optimizer.state_dict(),
                 "sched": scheduler.state_dict(), "step": step, "rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                 "numbers": json.dumps(numbers, default=str), "extra_files": json.dumps(files)}
        _atomic_save(state, self.folder / "checkpoint.pt")
        keep = set(files.values())
        for old in self.folder.glob("extra-*.pt"):  # superseded copies of the best epoch
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def restore(self, model, optimizer, scheduler) -> tuple[int, dict]:
        from trainables.distributed import unwrap

        path = self.folder / "checkpoint.pt"
        if not path.exists():
            return 0, {}
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            files = json.loads(state["extra_files"])
            extra = dict(json.loads(state["numbers"]))
            for key, name in files.items():
                extra[key] = torch.load(self.folder / name, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, KeyError, ValueError, EOFError):
            shutil.rmtree(self.folder, ignore_errors=True)  # a broken checkpoint: start over, never crash on it
            return 0, {}
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optim"])
        scheduler.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        numbers = {k: v for k, v in extra.items() if not isinstance(v, dict)}
        self._written = {key: (extra_version(extra[key], numbers), name) for key, name in files.items()}
        return int(state["step"]), extra
