"""A search's finalists: the test work its trials left out, for the trials that are reported on test.

With `finalists: k` (search/config.py) and more trials than the seeded points plus k, trials run with
`defer_test` (trainables/rungs.py): they compute what the validation objective needs and the test splits of
the models they fine-tune anyway, and leave out the test work that needs a computation of its own (BUCC's
test mining, Tatoeba, a fine-tune that serves only test-only targets). Once the trials are done, `xstilts
search` runs that work for the finalists — the seeded points (the baseline, known mixtures) and the k best
other finished trials by validation average — as Ray tasks with a trial's resources, each one the same
configuration without `defer_test`: phase 2 and the fine-tuned targets come back from the cache (same keys),
the deferred targets are computed and cached. Each finalist's test scores (XTREME when all nine targets are
there; its validation scores are the trial's) go to its own MLflow run, one step after its last rung, tagged
`xstilts.finalist`, with its cost so far plus the finalist work. A finalist that fails is reported after the summary is written;
`xstilts search ... --resume` runs the finalist work again (what was cached comes back).

Choosing finalists reads validation only: test never decides which trials are scored on test.
"""

from __future__ import annotations

import time
from dataclasses import replace

import optuna
import ray
from optuna.trial import TrialState as OptunaState

from search.config import SearchConfig
from search.trainable import TrialContext, _rung_metrics, mean_splits, seed_pipelines, train_launcher
from search.searcher import seeded_numbers
from search.space import TrialSpec
from search.tuner import DRIVER_CPU, optuna_storage
from trainables.errors import XstiltsError
from trainables.rungs import run_targets
from trainables.tracking import RecordingTracker

TAG = "xstilts.finalist"


def choose(cfg: SearchConfig, study: optuna.Study) -> list[int]:
    """Optuna trial numbers of the finalists: the seeded points that finished, then the `finalists` best other
    finished trials by validation average (the first objective)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(OptunaState.COMPLETE,)) if t.values]
    seeded = seeded_numbers(study, len(cfg.points_to_evaluate))
    free = sorted((t for t in done if t.number not in seeded), key=lambda t: (-t.values[0], t.number))
    return sorted(t.number for t in done if t.number in seeded) + [t.number for t in free[:cfg.finalists or 0]]


def finalist_work(params: dict, ctx: TrialContext, trial_id: str, cost: dict) -> dict:
    """One finalist, in a Ray task: every target of the trial's configuration on every split (cache hits for
    what the trial computed). Returns its test metrics and cost, which the driver logs to the trial's run."""
    started = time.time()
    spec = TrialSpec.from_params(params, ctx.candidates)
    pipes = seed_pipelines(ctx, spec, train_launcher(ctx, f"finalist-{trial_id}"))
    combined = {}
    for per_seed in zip(*(p.targets() for p in pipes)):
        combined[per_seed[0].name] = mean_splits([r.splits for r in per_seed])
    hours = (time.time() - started) / 3600
    # test only: its validation scores are the trial's, logged rung by rung (a second value at a later step
    # would be a rung Optuna never saw)
    metrics = {**_rung_metrics(ctx, pipes, combined, ["test"]),
               "cost/cpu_hours": cost.get("cost/cpu_hours", 0.0) + hours * ctx.cpu,
               "cost/gpu_hours": cost.get("cost/gpu_hours", 0.0) + hours * ctx.gpu,
               "cost/finalist_hours": hours}
    return metrics


def run_finalists(cfg: SearchConfig, ctx: TrialContext, results, log=print, tracking=None) -> dict:
    """The finalist work of a search whose trials deferred test work (`cfg.defers_test`); returns
    {"numbers": [...], "failed": {number: error}}. `ctx` is the trials' context (with `defer_test`). `tracking`
    (search/tracking.py `TrackTrials`): where each finalist's metrics go, to its trial's run, one step after the
    trial's last rung, tagged `xstilts.finalist`."""
    study = optuna.load_study(study_name=cfg.name, storage=optuna_storage(cfg))
    numbers = choose(cfg, study)
    by_number = {r.config.get("optuna_trial"): r for r in results if r.config}
    full = replace(ctx, base=ctx.base.model_copy(update={"defer_test": False}))
    workers = ctx.base.distributed.workers
    options = ({"num_cpus": DRIVER_CPU} if workers > 1  # its jobs run on Ray Train workers, as a trial's do
               else {"num_cpus": ctx.cpu, **({"num_gpus": ctx.gpu} if ctx.gpu else {})})
    remote = ray.remote(max_retries=cfg.max_failures, **options)(finalist_work)
    seeded = len(set(numbers) & seeded_numbers(study, len(cfg.points_to_evaluate)))
    log(f"finalists: trials {', '.join(map(str, numbers)) or 'none'} ({seeded} seeded, {len(numbers) - seeded} best "
        f"other finished by validation, of at most {cfg.finalists}) get the test work the trials left out")
    refs = {}
    for n in numbers:
        result = by_number.get(n)
        if result is None:  # finished in Optuna but not in this Ray experiment: nothing to run it from
            continue
        cost = {k: v for k, v in (result.metrics or {}).items() if k.startswith("cost/")}
        trial_id = result.metrics.get("trial_id") or result.path.split("/")[-1]
        refs[n] = (trial_id, remote.remote(result.config, full, trial_id, cost))
    failed = {}
    for n, (trial_id, ref) in refs.items():
        try:
            metrics = ray.get(ref)
        except Exception as exc:  # the other finalists' work is kept; --resume runs this one again
            failed[n] = str(exc).strip().splitlines()[-1][:300]
            continue
        if tracking is not None:
            record = RecordingTracker()
            record.set_tags({TAG: "true"})
            record.log_metrics(metrics, step=len(run_targets(ctx.base)) + 1)  # after the trial's trial-time rungs
            tracking.add(trial_id, record.drain(), n)
    return {"numbers": numbers, "failed": failed}


def check_finalists(outcome: dict) -> None:
    if outcome["failed"]:
        n, what = next(iter(outcome["failed"].items()))
        raise XstiltsError(f"{len(outcome['failed'])} finalists' test work failed; trial {n}: {what}",
                           "fix the cause, then `xstilts search ... --resume` runs it again (cached work comes back)")
