"""The Ray Tune trainable: a thin adapter from a trial's parameters to `trainables.pipeline.Pipeline`.

The adapter owns orchestration. A trial runs its configuration (a `TrialSpec`) with `repeats` seeds in
lockstep: each pipeline yields its targets in rung order, and after each target the adapter reports one
rung to Tune — the mean over seeds of `validation/average` (the objective: validation splits only) — so ASHA
can stop repeated configurations early too. Fine-tuned targets fan out over the trial's extra placement-group
bundles when `resources.fan_out > 1`.

Resume is a cache hit: a retried or restored trial starts again from the top; phases 2 and 3 come back from
the content-addressed cache, and rungs already reported (its checkpointed `TrialState`) are not reported again.
Each trial has one MLflow run nested under the search's parent run, tagged with the Ray trial id, the Optuna
trial number, the node and the phase-2 cache hit. The trial never talks to MLflow: it records its tracking calls
and hands them to Tune with each rung's checkpoint (`report_rung`, file `TRACKING`); the search's driver writes
them (search/tracking.py `TrackTrials`), so a tracking server that is down never touches a trial.
Each attempt writes its PID and node to `<search>/pids/<trial id>` (with `running` false once it ends).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import ray
from ray import tune

from search.space import TrialSpec
from search.tracking import TRACKING
from trainables import names
from trainables.config import PipelineConfig
from trainables.rungs import run_targets
from trainables.sysmetrics import Usage
from trainables.tracking import NullTracker, RecordingTracker, flatten_results

if TYPE_CHECKING:
    from trainables.pipeline import Pipeline

METRIC = names.OBJECTIVE
STATE = "state.json"


@dataclass(frozen=True)
class TrialContext:
    """Search-wide constants every trial needs (passed once through `tune.with_parameters`)."""

    name: str
    base: PipelineConfig  # the trial's pipeline preset, validated, paths absolute
    candidates: tuple[str, ...]
    tracks: bool  # the search tracks its trials in MLflow (the driver writes what they record)
    seed: int
    repeats: int
    cpu: float
    gpu: float
    fan_out: int
    train_storage: str = ""  # Ray Train runs (distributed.workers > 1): their sharded checkpoints
    registry: str = ""  # placement groups of Train runs, for RemoveTrainPlacementGroups
    max_failures: int = 2
    search_dir: str = ""  # the search's folder: trials' PID files, their cache entries

    @property
    def seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.repeats)]

    @property
    def n_rungs(self) -> int:
        return len(run_targets(self.base))

    @property
    def splits(self) -> list[str]:
        """The splits trials log: without test while test work waits for the finalists (search/finalists.py): a
        test average over the targets a trial happened to finish is no number to compare."""
        return [s for s in self.base.eval_splits if not (s == "test" and self.base.defer_test)]


@dataclass
class TrialState:
    """What a trial checkpoints at every rung."""

    rung: int = 0  # rungs already reported to Tune
    elapsed_s: float = 0.0  # wall time of all attempts so far (for cost)

    def save(self, folder: Path) -> None:
        (folder / STATE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, checkpoint) -> "TrialState":
        if checkpoint is None:
            return cls()
        with checkpoint.as_directory() as d:
            raw = json.loads((Path(d) / STATE).read_text())
        return cls(**{k: raw[k] for k in ("rung", "elapsed_s") if k in raw})


def _tracker(ctx: TrialContext):
    """What the trial logs, recorded for the driver to write (nothing when tracking is off)."""
    if not ctx.tracks:
        return NullTracker()
    tracker = RecordingTracker()
    tracker.set_tags({"node": ray.get_runtime_context().get_node_id()[:12]})  # the node may change after a restart
    return tracker


def _pid_file(ctx: TrialContext, trial_id: str, running: bool = True, started: float = 0.0) -> None:
    """`<search>/pids/<trial id>`: the process of the trial's latest attempt, when the attempt started (its process
    up, its imports done), and whether it is still running it (`running` false once it returned or raised; a
    killed attempt leaves true behind until the next attempt). Ray keeps worker processes for reuse, so a live
    PID alone does not mean a live trial."""
    if ctx.search_dir:
        folder = Path(ctx.search_dir) / "pids"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{trial_id}.{os.getpid()}"
        tmp.write_text(json.dumps({"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                                   "running": running, "started": started}))
        os.replace(tmp, folder / trial_id)  # readers never see half a record


def mean_splits(per_seed: list[dict]) -> dict:
    """split -> lang -> metric -> mean over seeds (one seed: itself)."""
    if len(per_seed) == 1:
        return per_seed[0]
    out: dict = {}
    for split in per_seed[0]:
        out[split] = {lang: {m: float(np.mean([r[split][lang][m] for r in per_seed])) for m in values}
                      for lang, values in per_seed[0][split].items()}
    return out


def fan_out_map(ctx: TrialContext):
    """With resources.fan_out > 1, each fine-tuned target runs as a Ray task in one of the trial's extra
    placement-group bundles (Tune's placement group captures the trial's child tasks); results come back in
    target order, so the rungs stay the same as in a sequential trial."""
    if ctx.fan_out <= 1:
        return None
    opts = {"num_cpus": ctx.cpu, **({"num_gpus": ctx.gpu} if ctx.gpu else {})}

    def target_map(fn, calls):
        remote = ray.remote(**opts)(fn)
        refs = [remote.remote(*call) for call in calls]  # all launched now, at most fan_out run at once
        return (ray.get(ref) for ref in refs)

    return target_map


def train_launcher(ctx: TrialContext, trial_id: str):
    """Ray Train workers for the trial's jobs when `distributed.workers > 1` (None: in the trial's process)."""
    if ctx.base.distributed.workers <= 1:
        return None
    from search.distributed import launcher

    return launcher(ctx.base.distributed, Path(ctx.train_storage), ctx.cpu, ctx.gpu, ctx.max_failures,
                    owner=trial_id, registry=Path(ctx.registry))


def run_trial(params: dict, ctx: TrialContext) -> None:
    """Tune function trainable."""
    with trial_run(params, ctx) as (state, spec, trial_id, tracker):
        clock = time.time()
        pipes = seed_pipelines(ctx, spec, train_launcher(ctx, trial_id))
        # one name per setting: the pipeline's (`intermediate.lr`), whether the search tuned it or not
        tracker.log_params({**{names.weight_param(t): spec.mixture.get(t, 0.0) for t in ctx.candidates},
                            **pipes[0].params(), "seed": ctx.seed, "repeats": ctx.repeats})
        tracker.set_tags({"cache_hit": str(all(p.phase2.get("cache_hit") for p in pipes)).lower(),
                          "phase2.dir": pipes[0].phase2.get("dir", "")})
        tracker.log_inputs(pipes[0].dataset_inputs())
        _entries_file(ctx, params, sorted({e for p in pipes for e in p.cache_entries()}))
        combined: dict[str, dict] = {}
        streams = [p.targets(fan_out_map(ctx)) for p in pipes]
        for rung, per_seed in enumerate(zip(*streams), start=1):
            name = per_seed[0].name
            combined[name] = mean_splits([r.splits for r in per_seed])
            _tag_notes(tracker, name, [r.notes for r in per_seed])
            if rung <= state.rung:  # reported before a restart; its results came back from the cache
                continue
            metrics = _rung_metrics(ctx, pipes, combined)
            now = time.time()
            state.elapsed_s += now - clock
            clock = now
            report_rung(ctx, tracker, state, rung, metrics)


def seed_pipelines(ctx: TrialContext, spec: TrialSpec, launch) -> list["Pipeline"]:
    """One prepared pipeline (phases 1-2) per seed of a configuration (a trial's, or a finalist's)."""
    from trainables.pipeline import Pipeline  # here, not at the top: torch stays out of the driver's imports of
    # this module and out of replayed trials (search/replay.py), which share its state and reporting

    return [Pipeline(spec.with_seed(s).pipeline_config(ctx.base), log=lambda *a: None, launcher=launch).prepare()
            for s in ctx.seeds]


@contextmanager
def trial_run(params: dict, ctx: TrialContext):
    """What every trial (real or replayed) does around its work: its state from the last checkpoint, its spec, its
    PID file (marked ended whatever happens), its recording tracker. The driver opens and closes the trial's run
    with Ray's verdict (search/tracking.py)."""
    global _usage
    _usage = Usage()
    state = TrialState.load(tune.get_checkpoint())
    spec = TrialSpec.from_params(params, ctx.candidates)
    trial_id = tune.get_context().get_trial_id()
    started = time.time()
    _pid_file(ctx, trial_id, started=started)
    try:
        yield state, spec, trial_id, _tracker(ctx)
    finally:
        _pid_file(ctx, trial_id, running=False, started=started)


ENTRIES = "entries"  # <search>/entries/<optuna trial>.json: the cache entries the trial uses (xstilts cache)


def _entries_file(ctx: TrialContext, params: dict, entries: list[str]) -> None:
    if not ctx.search_dir:
        return
    folder = Path(ctx.search_dir) / ENTRIES
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{params.get('optuna_trial')}.{os.getpid()}"
    tmp.write_text(json.dumps({"trial": params.get("optuna_trial"), "cache_dir": ctx.base.cache_dir,
                               "entries": entries}))
    tmp.rename(folder / f"{params.get('optuna_trial')}.json")


def _tag_notes(tracker, target: str, notes: list[dict]) -> None:
    """A target's notes as run tags, values joined over languages and seeds: BUCC's threshold origins, and where
    phase-3 selection found its best model (its full history stays in the results)."""
    keys = {k for n in notes for k in n}
    tags = {}
    for key in keys:
        if key == "selection":
            values = sorted({f"best at step {s['best_step']} of {s['steps']} run ({s['planned_steps']} planned)"
                             for s in (n[key] for n in notes if n.get(key))})
        else:
            values = sorted({str(v) for n in notes for v in (n.get(key) or {}).values()})
        tags[names.note_tag(target, key)] = ", ".join(values)
    if tags:
        tracker.set_tags(tags)


def _rung_metrics(ctx: TrialContext, pipes: list[Pipeline], combined: dict, splits: list[str] | None = None) -> dict:
    """Everything logged at a rung: each split's summary of the seed-averaged results, the spread over seeds
    and each seed's own average (repeats). `splits`: these only (default: the splits trials log)."""
    from trainables.pipeline import summarise

    splits = ctx.splits if splits is None else splits
    metrics: dict = {}
    for split in splits:
        metrics.update(flatten_results(summarise(combined, split, pipes[0].notes,
                                                 pipes[0].cfg.target.max_eval_examples), split))
    if len(pipes) > 1:
        for split in splits:
            per_seed = [p.summary(split)["average"] for p in pipes]
            metrics[names.average_std(split)] = float(np.std(per_seed))
            for p, value in zip(pipes, per_seed):
                metrics[names.seed_metric(p.cfg.seed, names.average(split))] = value
    return metrics


_usage: Usage | None = None  # what this trial's process used since its last rung (trial_run starts it)


def report_rung(ctx: TrialContext, tracker, state: "TrialState", rung: int, metrics: dict) -> None:
    """Log a rung's metrics, its cost so far (wall time x resources) and the process's system metrics since the
    last rung, checkpoint the trial's state and report the rung to Tune (real and replayed trials alike), with
    everything the trial recorded for its MLflow run since the last report."""
    hours = state.elapsed_s / 3600
    cost = {"cost/cpu_hours": hours * ctx.cpu, "cost/gpu_hours": hours * ctx.gpu}
    cost.update(_usage.take() if _usage else {})  # (system/...: reported with the cost)
    tracker.log_metrics({**metrics, **cost}, step=rung)
    state.rung = rung
    _report({"rung": rung, **{k: v for k, v in metrics.items() if _reported(k)}, **cost}, state, tracker.drain())


def _reported(key: str) -> bool:
    """The metrics Tune sees at each rung: the objective, the test average, XTREME, the spread, and each target's
    score (so `ResultGrid.get_dataframe()` has them; the per-language values stay in MLflow)."""
    name = names.parse_metric(key)
    return name.kind in ("average", "xtreme", "score") or key.endswith("_std")


def _report(metrics: dict, state: TrialState, ops: list) -> None:
    """One rung to Tune, with a checkpoint holding the trial's state and what it recorded for its MLflow run
    since the last report (`TRACKING`, read by the driver's TrackTrials when Tune registers the checkpoint: kept
    out of the reported metrics, which Tune keeps in its experiment state for every checkpoint)."""
    with tempfile.TemporaryDirectory() as d:
        state.save(Path(d))
        if ops:
            (Path(d) / TRACKING).write_text(json.dumps(ops))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
