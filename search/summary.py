"""A search's summary (DESIGN.md): every trial from Optuna, joined with its MLflow run; the best mixture.

Selection uses `validation/average` only (Optuna's objective). A trial's mixture is the probabilities it
trained with (its run's `mix/<task>` params, after sampler and temperature), not its raw weights. The test
split's scores are read off the runs for reports; they never fed the search.
"""

from __future__ import annotations

import os

import optuna
from optuna.trial import TrialState
from rich.table import Table

from search.config import SearchConfig
from search.searcher import RETRY_OF, seeded_numbers
from search.space import TrialSpec
from search.tuner import optuna_storage
from trainables import names
from trainables.mixture import Mixture
from trainables.errors import XstiltsError
from trainables.tasks import TARGETS
from trainables.tracking import RunRecord, TrackingStore, mask


def trial_runs(uri: str, experiment: str, parent: str) -> dict[int, RunRecord]:
    """The MLflow runs of a search's trials (the children of its parent run), by Optuna trial number."""
    runs = TrackingStore(uri).children(experiment, parent)
    return {int(r.tags["optuna.trial"]): r for r in runs if r.tags.get("optuna.trial", "").isdigit()}


def trained_mixture(run: RunRecord | None, spec: TrialSpec) -> dict[str, float]:
    """The probabilities a trial trained with: its run's `mix/` params; without a run, the spec's weights
    through the explicit sampler (what the pipeline does unless the preset chose a size-based sampler)."""
    if run is not None and any(k.startswith(names.MIX) for k in run.params):
        return run.mixture()
    return Mixture(dict(spec.mixture), temperature=spec.temperature or 1.0).probabilities()


def mixture_label(mixture: dict[str, float]) -> str:
    if not mixture:
        return "(baseline)"
    return " + ".join(f"{t} {p:.2f}" for t, p in sorted(mixture.items(), key=lambda kv: (-kv[1], kv[0])))


def score_name(n_targets: int, xtreme: bool = True) -> str:
    """Tables say XTREME only for all nine targets, and only where the trials logged an XTREME score (`xtreme`:
    every language XTREME lists, whole test sets: trainables.metrics.xtreme_score)."""
    return "XTREME" if n_targets == len(TARGETS) and xtreme else f"avg of {n_targets}"


def build_summary(cfg: SearchConfig, uri: str, parent: str, errors: int = 0, zombies: int = 0,
                  finalists: list[int] | None = None) -> dict:
    """`finalists`: the trials scored on test when the others deferred their test work (search/finalists.py)."""
    study = optuna.load_study(study_name=cfg.name, storage=optuna_storage(cfg))
    runs = trial_runs(uri, cfg.experiment_name, parent)
    trials = []
    seeded = seeded_numbers(study, len(cfg.points_to_evaluate))
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            continue
        run = runs.get(t.number)
        m = run.metrics if run else {}
        values = t.values if t.state == TrialState.COMPLETE else None
        trials.append({
            "number": t.number, "state": t.state.name,
            "mixture": trained_mixture(run, TrialSpec.from_params(t.params, cfg.candidates)),
            "params": dict(t.params), "average": values[0] if values else None,
            "cost": m.get(cfg.cost_metric),
            "xtreme": m.get(names.xtreme("validation")) if t.state == TrialState.COMPLETE else None,
            "test_average": m.get(names.average("test")), "test_xtreme": m.get(names.xtreme("test")),
            "mlflow_run_id": run.run_id if run else None, "targets": names.target_scores(m, "validation"),
            "seeded": t.number in seeded, **({"retry_of": t.user_attrs[RETRY_OF]} if RETRY_OF in t.user_attrs else {}),
            **({"finalist": t.number in finalists} if finalists is not None else {}),
        })
    done = [t for t in trials if t["state"] == "COMPLETE" and t["average"] is not None]
    best = max(done, key=lambda t: t["average"]) if done else None
    front = None
    if cfg.multi_objective:  # Optuna's Pareto front of (average up, cost down), cheapest first
        on_front = {t.number for t in study.best_trials}
        front = sorted(({k: t[k] for k in ("number", "mixture", "average", "cost", "test_average")}
                        for t in done if t["number"] in on_front), key=lambda t: (t["cost"] or 0.0, -t["average"]))
    return mask({
        "name": cfg.name, "num_samples": cfg.num_samples, "optuna_storage": optuna_storage(cfg),
        "objectives": list(cfg.objectives), "cost_metric": cfg.cost_metric, "pareto_front": front,
        "mlflow": {"tracking_uri": uri, "experiment": cfg.experiment_name, "parent_run_id": parent},
        "trials": trials, "errors": errors, "zombies_closed": zombies, "finalists": finalists,
        "best": None if best is None else {k: best[k] for k in ("number", "mixture", "average", "xtreme",
                                                               "test_average", "test_xtreme", "targets")},
    })


def summary_table(summary: dict, top: int = 5) -> Table:
    """The best trials by validation score; with a cost objective, every trial of the Pareto front too
    (marked *) and a cost column."""
    front = {t["number"] for t in summary.get("pareto_front") or []}
    ranked = sorted((t for t in summary["trials"] if t["average"] is not None), key=lambda t: -t["average"])
    done = [t for i, t in enumerate(ranked) if i < top or t["number"] in front]
    targets = [t for t in TARGETS if any(t in d["targets"] for d in done)]
    label = score_name(len(targets))
    cost = [summary["cost_metric"].split("/")[1].replace("_", "-")] if front and done else []
    title = (f"{summary['name']}: best mixtures (of {len(summary['trials'])} trials; "
             f"{sum(t['state'] == 'PRUNED' for t in summary['trials'])} pruned)")
    if front:
        title += "; * = Pareto front of score against cost"
    # the test average covers every target (XQuAD, TyDiQA and Tatoeba have only a test split): XTREME when all nine
    test_label = "XTREME" if done and all(t.get("test_xtreme") is not None for t in done) else "avg"
    table = Table("#", "mixture", f"val {label}", f"test {test_label}", *cost, *targets, title=title)
    for t in done:
        table.add_row(str(t["number"]) + ("*" if t["number"] in front else ""), mixture_label(t["mixture"]),
                      f"{t['average']:.2f}", "-" if t["test_average"] is None else f"{t['test_average']:.2f}",
                      *([f"{t['cost']:.4f}" if t["cost"] is not None else "-"] if cost else []),
                      *(f"{t['targets'].get(x, float('nan')):.1f}" for x in targets))
    return table


def unmasked(uri: str, configured: str | None, env: str) -> str:
    """A stored URI whose password was masked (***) is taken from the configuration or the environment."""
    if "***" not in uri:
        return uri
    for candidate in (configured, os.environ.get(env)):
        if candidate and "***" not in candidate:
            return candidate
    raise XstiltsError(f"the stored URI {uri} had a password, which is never written down",
                       f"set {env} (or name the search's preset) to read the search")
