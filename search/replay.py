"""Replayed trials: the search driver at full size without training anything (benchmarks/driver_scale.py).

With the search config key `replay: {record: benchmarks/records/toy_grid.json, time_scale: 0.05}` the driver
runs exactly as in a real search (the Optuna study searcher, SeededASHA, the live table, MLflow run closing, `settle_study`,
the summary) but each trial is `replay_trial` instead of `run_trial`. A replayed trial:

- maps its sampled parameters to the nearest recorded configuration (`nearest`): the same set of intermediate
  tasks (the record holds every subset, at equal weights; sampled weights are ignored) at the recorded
  intermediate learning rate nearest on a log scale (the pipeline's own when not searched); temperature,
  target lr and steps are ignored;
- for each rung, sleeps that rung's recorded wall time x `time_scale`, then logs and reports that rung's recorded
  results the way `run_trial` does: the same metric names (validation/test averages, XTREME when all nine
  targets are in, per-target scores, categories; per-language metrics are not in the record), the same MLflow
  run (nested under the search's run, tagged with the Ray trial id), the same checkpointed `TrialState`
  through `tune.report`, so ASHA, Optuna, `TrackTrials` and the summary see what they see from real trials;
- reports cost from the recorded (unscaled) wall time, so the cost objective matches the record.

`check_record` refuses, in the driver, a record that cannot stand for the search (another number of rungs,
candidates it never recorded). Importing this module does not import torch.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path


from search.space import TrialSpec
from search.trainable import TrialContext, report_rung, trial_run
from trainables import names
from trainables.errors import XstiltsError
from trainables.tasks import CATEGORIES, INTERMEDIATE, TARGETS


@functools.lru_cache(maxsize=4)
def load_record(path: str) -> dict:
    """The record (benchmarks/search_efficiency.py --record): {"settings": {candidates, lrs}, "configs": [...]}."""
    return json.loads(Path(path).read_text())


def check_record(replay, ctx: TrialContext) -> None:
    """The record must have one rung per target of the search's pipeline and cover its candidate tasks."""
    data = load_record(replay.record)
    recorded = set(data["settings"]["candidates"])
    missing = [t for t in ctx.candidates if t not in recorded]
    if missing:
        raise XstiltsError(f"replay record {replay.record} has no configuration with {', '.join(missing)}",
                           f"search only the recorded candidates ({', '.join(sorted(recorded))})")
    rungs = {len(c["values"]) for c in data["configs"]}
    if rungs != {ctx.n_rungs}:
        raise XstiltsError(f"replay record {replay.record} has {sorted(rungs)} rungs per trial but the search's "
                           f"pipeline has {ctx.n_rungs} targets", "replay it with the pipeline it was recorded with")


def config_label(config: dict) -> str:
    tasks = sorted(config["mixture"])
    return "baseline" if not tasks else f"{'+'.join(tasks)} @ {config['intermediate_lr']:g}"


def nearest(data: dict, spec: TrialSpec, default_lr: float) -> dict:
    """The recorded configuration nearest to a trial: the same tasks, then the nearest weights up to scale (a
    record of weighted mixtures), then the nearest learning rate (log scale)."""
    chosen = set(spec.mixture)
    same = [c for c in data["configs"] if set(c["mixture"]) == chosen]
    if not same:
        raise XstiltsError(f"the replay record has no configuration with tasks {sorted(chosen)}")
    lr = spec.intermediate_lr or default_lr

    def shares(mixture: dict) -> dict:
        top = max(mixture.values(), default=1.0)
        return {t: w / top for t, w in mixture.items()}

    want = shares(spec.mixture)
    return min(same, key=lambda c: (sum(abs(w - want[t]) for t, w in shares(c["mixture"]).items()),
                                    0.0 if c["intermediate_lr"] is None or not lr
                                    else abs(math.log(c["intermediate_lr"]) - math.log(lr))))


def _split_metrics(scores: dict[str, float], split: str) -> dict[str, float]:
    """A split's summary metrics from per-target scores, named as `flatten_results` names them."""
    if not scores:
        return {}
    average = sum(scores.values()) / len(scores)
    out = {names.average(split): average, **{names.target_score(t, split): v for t, v in scores.items()}}
    if set(scores) == set(TARGETS):
        out[names.xtreme(split)] = average
    for cat, members in CATEGORIES.items():
        if all(t in scores for t in members):
            out[names.category(cat, split)] = sum(scores[t] for t in members) / len(members)
    return out


def rung_metrics(config: dict, rung: int, splits=("validation", "test")) -> dict[str, float]:
    """What a real trial logs after `rung` targets, from the record: the targets fine-tuned so far (a target's
    score is fixed once it is fine-tuned), with the recorded objective for `validation/average`."""
    done = config["targets"][:rung]
    out: dict[str, float] = {}
    for split in splits:
        table = config.get(f"{split}_targets") or {}
        out.update(_split_metrics({t: table[t] for t in done if t in table}, split))
    if "validation" in splits:
        out[names.OBJECTIVE] = config["values"][rung - 1]
    return out


def replay_trial(params: dict, ctx: TrialContext, replay) -> None:
    """Tune function trainable: `run_trial`'s bookkeeping, with a record's results instead of a pipeline."""
    with trial_run(params, ctx) as (state, spec, trial_id, tracker):
        from trainables.mixture import Mixture

        pcfg = spec.pipeline_config(ctx.base)
        config = nearest(load_record(replay.record), spec, pcfg.intermediate.lr)
        sampler = pcfg.intermediate.sampler if pcfg.intermediate.sampler in ("explicit", "uniform") else "explicit"
        probs = Mixture(dict(spec.mixture), sampler=sampler, temperature=pcfg.intermediate.temperature or 1.0).probabilities()
        tracker.log_params({**{names.weight_param(t): spec.mixture.get(t, 0.0) for t in ctx.candidates},
                            "base_model": pcfg.model.name, "seed": ctx.seed, "intermediate.lr": pcfg.intermediate.lr,
                            "intermediate.steps": pcfg.intermediate.steps, "intermediate.sampler": pcfg.intermediate.sampler,
                            "intermediate.temperature": pcfg.intermediate.temperature, "target.lr": pcfg.target.lr,
                            **{names.mix_param(t): probs.get(t, 0.0) for t in INTERMEDIATE},
                            "repeats": ctx.repeats})  # (the tuned values are in the pipeline's names above)
        tracker.set_tags({"cache_hit": "false", "replay.config": config_label(config)})
        elapsed = config["elapsed_s"]
        splits = tuple(ctx.base.eval_splits)
        for rung in range(1, len(elapsed) + 1):
            if rung <= state.rung:  # reported before a restart (a real trial gets these from its cache)
                continue
            time.sleep(max(0.0, elapsed[rung - 1] - (elapsed[rung - 2] if rung > 1 else 0.0)) * replay.time_scale)
            metrics = rung_metrics(config, rung, splits)
            state.elapsed_s = elapsed[rung - 1]
            report_rung(ctx, tracker, state, rung, metrics)
