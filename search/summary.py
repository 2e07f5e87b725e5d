"""A search's summary (DESIGN.md): every trial from Optuna, joined with its MLflow run; the best mixture.

Selection uses `validation/xtreme` only (Optuna's objective). The best trial's test-split scores are
read off its MLflow run for the report; they never fed the search.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from rich.table import Table

from search.config import SearchConfig
from search.space import mixture_of
from search.tuner import optuna_storage
from trainables.mixture import Mixture
from trainables.tasks import TARGETS


def trial_runs(uri: str, experiment: str, parent: str) -> list:
    """The MLflow runs of a search's trials (the children of its parent run)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=5000)


def run_mixture(run) -> dict[str, float]:
    """A trial run's mixture probabilities, from its logged `weight/<task>` params."""
    weights = {k[7:]: float(v) for k, v in run.data.params.items() if k.startswith("weight/") and float(v) > 0}
    return Mixture(weights).probabilities()


def _runs_by_trial(uri: str, experiment: str, parent: str) -> dict[int, object]:
    runs = trial_runs(uri, experiment, parent)
    return {int(r.data.tags["optuna.trial"]): r for r in runs if r.data.tags.get("optuna.trial", "").isdigit()}


def build_summary(cfg: SearchConfig, uri: str, parent: str, errors: int = 0, zombies: int = 0) -> dict:
    study = optuna.load_study(study_name=cfg.name, storage=optuna_storage(cfg))
    runs = _runs_by_trial(uri, cfg.experiment_name, parent)
    trials = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            continue
        mix = mixture_of(t.params, cfg.candidates)
        run = runs.get(t.number)
        m = run.data.metrics if run else {}
        trials.append({
            "number": t.number, "state": t.state.name, "mixture": Mixture(mix).probabilities(),
            "params": dict(t.params), "xtreme": t.value if t.state == TrialState.COMPLETE else None,
            "test_xtreme": m.get("xtreme"), "mlflow_run_id": run.info.run_id if run else None,
            "targets": {k.split("/")[2]: v for k, v in m.items()
                        if k.startswith("validation/target/") and k.endswith("/score")},
        })
    done = [t for t in trials if t["state"] == "COMPLETE" and t["xtreme"] is not None]
    best = max(done, key=lambda t: t["xtreme"]) if done else None
    return {
        "name": cfg.name, "num_samples": cfg.num_samples, "optuna_storage": optuna_storage(cfg),
        "mlflow": {"tracking_uri": uri, "experiment": cfg.experiment_name, "parent_run_id": parent},
        "trials": trials, "errors": errors, "zombies_closed": zombies,
        "best": None if best is None else {"number": best["number"], "mixture": best["mixture"],
                                           "xtreme": best["xtreme"], "test_xtreme": best["test_xtreme"],
                                           "targets": best["targets"]},
    }


def summary_table(summary: dict, top: int = 5) -> Table:
    done = sorted((t for t in summary["trials"] if t["xtreme"] is not None), key=lambda t: -t["xtreme"])[:top]
    targets = [t for t in TARGETS if any(t in d["targets"] for d in done)]
    table = Table("#", "mixture", "val XTREME", "test XTREME", *targets,
                  title=f"{summary['name']}: best mixtures (of {len(summary['trials'])} trials; "
                        f"{sum(t['state'] == 'PRUNED' for t in summary['trials'])} pruned)")
    for t in done:
        label = " + ".join(f"{k} {p:.2f}" for k, p in t["mixture"].items()) or "(baseline)"
        table.add_row(str(t["number"]), label, f"{t['xtreme']:.2f}",
                      "-" if t["test_xtreme"] is None else f"{t['test_xtreme']:.2f}",
                      *(f"{t['targets'].get(x, float('nan')):.1f}" for x in targets))
    return table
