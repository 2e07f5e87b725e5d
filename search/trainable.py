"""The Ray Tune trainable: a thin adapter from a trial's sampled parameters to `trainables.run_pipeline`.

Per rung (one per target) it reports `validation/xtreme` (the objective: validation splits only) and
checkpoints the finished targets, so a retried or resumed trial continues where it stopped (phase 2
comes back from the content-addressed cache). Each trial logs one MLflow run nested under the search's
parent run, tagged with the Ray trial id, the Optuna trial number, the node and the phase-2 cache hit;
a restarted trial finds its run again by tag instead of creating a duplicate.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
from ray import tune

from search.space import mixture_of, trial_overrides
from trainables.config import apply_overrides, validate
from trainables.pipeline import run_pipeline
from trainables.tracking import MlflowTracker, NullTracker

METRIC = "validation/xtreme"
STATE = "state.json"


def pipeline_config(params: dict, static: dict, seed: int):
    raw = apply_overrides(static["pipeline"], trial_overrides(params, static["candidates"]) + [f"seed={seed}"])
    return validate(raw, "trial config")


def _tracker(static: dict, params: dict, trial_id: str, state: dict):
    if not static.get("tracking_uri"):
        return NullTracker()
    tags = {"ray.trial_id": trial_id, "optuna.trial": str(params.get("optuna_trial", "")),
            "node": ray.get_runtime_context().get_node_id()[:12], "xstilts.search": static["name"]}
    run_id = state.get("mlflow_run_id") or _find_run(static, trial_id)
    tracker = MlflowTracker(static["tracking_uri"], static["experiment"], f"trial-{params.get('optuna_trial')}",
                            parent_run_id=static.get("parent_run_id"), tags=tags, run_id=run_id)
    if run_id:
        tracker.set_tags(tags)  # the node may have changed after a restart
    return tracker


def _find_run(static: dict, trial_id: str) -> str | None:
    from mlflow import MlflowClient

    client = MlflowClient(static["tracking_uri"])
    exp = client.get_experiment_by_name(static["experiment"])
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], f"tags.`ray.trial_id` = '{trial_id}'", max_results=1)
    return runs[0].info.run_id if runs else None


def run_trial(params: dict, static: dict) -> None:
    """Tune function trainable; `static` (search-wide constants) comes through tune.with_parameters."""
    ckpt = tune.get_checkpoint()
    state: dict = {}
    if ckpt:
        with ckpt.as_directory() as d:
            state = json.loads((Path(d) / STATE).read_text())
    trial_id = tune.get_context().get_trial_id()
    tracker = _tracker(static, params, trial_id, state)
    state["mlflow_run_id"] = tracker.run_id
    state["_since"] = time.time()
    seeds = [static["seed"] + k for k in range(static["repeats"])]
    mix = mixture_of(params, static["candidates"])
    tracker.log_params({**{f"weight/{t}": mix.get(t, 0.0) for t in static["candidates"]},
                        **{k: v for k, v in params.items() if not k.startswith(("use_", "w_"))}})
    try:
        if len(seeds) == 1:
            _single(params, static, seeds[0], tracker, state)
        else:
            _repeated(params, static, seeds, tracker, state)
    except Exception:
        tracker.close("FAILED")
        raise
    # Ray ends a trial it stops (ASHA, or done) by raising inside tune.report: that skips this line, and the
    # driver's CloseRuns callback closes the run instead.
    tracker.close()


def _report(metrics: dict, state: dict, static: dict | None = None, tracker=None) -> None:
    if static is not None:  # cost so far: wall time of this trial (all attempts) x its resources
        now = time.time()
        state["elapsed_s"] = state.get("elapsed_s", 0.0) + now - state.pop("_since", now)
        state["_since"] = now
        hours = state["elapsed_s"] / 3600
        cost = {"cost/cpu_hours": hours * static["cpu"], "cost/gpu_hours": hours * static["gpu"]}
        metrics = {**metrics, **cost}
        if tracker is not None:
            tracker.log_metrics(cost)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / STATE).write_text(json.dumps(state))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _single(params, static, seed, tracker, state) -> None:
    cfg = pipeline_config(params, static, seed)

    def report(metrics: dict, pstate: dict) -> None:
        state["per_target"] = pstate["per_target"]
        _report({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, state, static, tracker)

    results = run_pipeline(cfg, report=report, tracker=tracker, log=lambda *a: None,
                           done=state.get("per_target"), target_map=fan_out_map(static))
    tracker.set_tags({"phase2.dir": results["phase2"].get("dir", "")})


def fan_out_map(static: dict):
    """With resources.fan_out > 1, each fine-tuned target runs as a Ray task in one of the trial's extra
    placement-group bundles (Tune's placement group captures the trial's child tasks); results come back in
    target order, so the rungs stay the same as in a sequential trial."""
    if static.get("fan_out", 1) <= 1:
        return None
    opts = {"num_cpus": static["cpu"], **({"num_gpus": static["gpu"]} if static["gpu"] else {})}

    def target_map(fn, calls):
        remote = ray.remote(**opts)(fn)
        refs = [remote.remote(*call) for call in calls]  # all launched now, at most fan_out run at once
        return (ray.get(ref) for ref in refs)

    return target_map


def _repeated(params, static, seeds, tracker, state) -> None:
    """Several seeds of one configuration: the objective is their mean, the spread is logged. One report.
    Per-seed XTREME (`seed/<s>/validation_xtreme`) and per-target means are logged for reports."""
    scores: dict[str, dict] = state.setdefault("repeats", {})
    for seed in seeds:
        if str(seed) in scores:
            continue
        r = run_pipeline(pipeline_config(params, static, seed), log=lambda *a: None)
        scores[str(seed)] = {"val": r["validation"]["xtreme"], "test": r["xtreme"],
                             "val_targets": {t: e["score"] for t, e in r["validation"]["targets"].items()},
                             "test_targets": {t: e["score"] for t, e in r["targets"].items()}}
        tracker.log_metrics({f"seed/{seed}/validation_xtreme": r["validation"]["xtreme"],
                             f"seed/{seed}/test_xtreme": r["xtreme"]})
    val = np.array([v["val"] for v in scores.values()])
    test = np.array([v["test"] for v in scores.values()])
    per_target = {}
    for key, prefix in (("val_targets", "validation/"), ("test_targets", "")):
        for t in next(iter(scores.values()))[key]:
            per_target[f"{prefix}target/{t}/score"] = float(np.mean([v[key][t] for v in scores.values()]))
    metrics = {METRIC: float(val.mean()), "validation/xtreme_std": float(val.std()), "xtreme": float(test.mean()),
               "test/xtreme": float(test.mean()), "test/xtreme_std": float(test.std()), "repeats": len(val)}
    tracker.log_metrics({**metrics, **per_target})
    _report(metrics, state, static, tracker)
