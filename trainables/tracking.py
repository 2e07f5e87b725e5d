"""Tracking behind a small interface: one MLflow implementation, one null one. The only module that
talks to MLflow: trials and runs log through `MlflowTracker`; searches, reports and the scaling study read
runs back through `TrackingStore`.

Metric and parameter names come from `trainables.names` (`target/xnli/de/accuracy`, `target/xnli/score`,
`average`, `validation/average`, `mix/mnli`). Params and metrics go in batches (one request per call, not
one per key). The default store is SQLite under `mlflow/` (MLflow 3.17's file store is off).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Mapping, Protocol

from dataclasses import dataclass, field

from trainables import names
from trainables.errors import XstiltsError

SECRET_HINTS = ("token", "secret", "password", "passwd", "credential")  # parameter names never logged


def mask(value):
    """`value` with every URI password (`scheme://user:password@host`) replaced by *** — for anything written:
    params, tags, summaries, logs. Mappings and lists are masked deeply."""
    import re

    if isinstance(value, str):
        return re.sub(r"(\w[\w+.-]*://[^:/@\s]*):[^@\s]+@", r"\1:***@", value)
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask(v) for v in value)
    return value


class Tracker(Protocol):
    run_id: str | None

    def log_params(self, params: Mapping[str, object]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_dict(self, data: dict, name: str) -> None: ...
    def close(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    run_id = None

    def log_params(self, params): pass
    def log_metrics(self, metrics, step=0): pass
    def set_tags(self, tags): pass
    def log_dict(self, data, name): pass
    def close(self, status="FINISHED"): pass


def default_uri() -> str:
    """MLFLOW_TRACKING_URI, else SQLite at <XSTILTS_HOME or the working directory>/mlflow/mlflow.db."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from trainables.presets import home

    return f"sqlite:///{home() / 'mlflow' / 'mlflow.db'}"


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside the database (MLflow's default, ./mlruns, would follow the
    CWD of whichever process logs first); a tracking server manages its own."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts" / experiment).as_uri()


class MlflowTracker:
    """One MLflow run (optionally nested under `parent_run_id`), written through MlflowClient in batches."""

    def __init__(self, uri: str | None, experiment: str, run_name: str, parent_run_id: str | None = None,
                 tags: Mapping[str, str] | None = None, run_id: str | None = None):
        from mlflow import MlflowClient

        self.uri = uri or default_uri()
        if self.uri.startswith("sqlite:///"):  # the store's folder is made when a run is made, not before
            Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(self.uri)
        try:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(
                experiment, artifact_location=artifact_location(self.uri, experiment))
            if not exp or exp.tags.get("mlflow.experimentKind") != "custom_model_development":
                # MLflow 3 otherwise opens experiments in its GenAI view; these are training runs
                self.client.set_experiment_tag(exp_id, "mlflow.experimentKind", "custom_model_development")
        except Exception as exc:
            raise XstiltsError(f"MLflow tracking store {mask(self.uri)} is unreachable ({type(exc).__name__}) — start the "
                               f"server, fix tracking.uri, or set tracking.enabled=false") from None
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self.run_id = run_id or self.client.create_run(exp_id, run_name=run_name, tags=all_tags).info.run_id
        self.experiment_id = exp_id

    def log_params(self, params):
        from mlflow.entities import Param

        items = [Param(k, mask(str(v))[:6000]) for k, v in params.items()
                 if not any(h in k.lower() for h in SECRET_HINTS)]  # never log secrets such as HF_TOKEN
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics, step=0):
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items() if v is not None and v == v]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def set_tags(self, tags):
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, mask(str(v))) for k, v in tags.items()])

    def log_dict(self, data, name):
        self.client.log_text(self.run_id, json.dumps(mask(data), indent=1, default=str), name)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, mask(text), name)

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def close(self, status="FINISHED"):
        self.client.set_terminated(self.run_id, status)


def flatten_results(summary: dict, split: str = "test") -> dict[str, float]:
    """A split's summary (`{"targets": {t: {"languages": {l: {m: v}}, "score": s}}, "average", "xtreme",
    "categories"}`) -> hierarchical metric keys (`trainables.names`)."""
    out = {names.average(split): summary["average"], names.xtreme(split): summary.get("xtreme")}
    for task, entry in summary["targets"].items():
        out[names.target_score(task, split)] = entry["score"]
        for lang, values in entry["languages"].items():
            for metric, value in values.items():
                out[names.language_metric(task, lang, metric, split)] = value
    for cat, value in summary.get("categories", {}).items():
        out[names.category(cat, split)] = value
    return {k: v for k, v in out.items() if v is not None}


def log_summary(tracker: "Tracker", summary: dict, split: str, step: int) -> None:
    tracker.log_metrics(flatten_results(summary, split), step=step)


# ---------------------------------------------------------------- reading runs back


@dataclass(frozen=True)
class RunRecord:
    """What the search's summaries and reports read of one MLflow run."""

    run_id: str
    status: str
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)

    def mixture(self) -> dict[str, float]:
        """The mixture probabilities the run trained with (its `mix/<task>` params), zero entries dropped."""
        return {t: p for t, p in sorted(names.params_with(self.params, names.MIX).items()) if p > 0}


class TrackingStore:
    """Queries of a tracking store (a server or SQLite): runs by tag, children of a parent, closing runs."""

    def __init__(self, uri: str):
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(uri)

    def _experiment_id(self, experiment: str) -> str | None:
        exp = self.client.get_experiment_by_name(experiment)
        return exp.experiment_id if exp else None

    def _search(self, experiment: str, filter_string: str, max_results: int = 5000) -> list[RunRecord]:
        exp_id = self._experiment_id(experiment)
        if exp_id is None:
            return []
        runs = self.client.search_runs([exp_id], filter_string, max_results=max_results)
        return [RunRecord(r.info.run_id, r.info.status, dict(r.data.params), dict(r.data.metrics), dict(r.data.tags))
                for r in runs]

    def find(self, experiment: str, tag: str, value: str) -> RunRecord | None:
        runs = self._search(experiment, f"tags.`{tag}` = '{value}'", max_results=1)
        return runs[0] if runs else None

    def children(self, experiment: str, parent_run_id: str) -> list[RunRecord]:
        """The runs nested under `parent_run_id` (a search's trials)."""
        return self._search(experiment, f"tags.mlflow.parentRunId = '{parent_run_id}'")

    def terminate(self, experiment: str, tag: str, value: str, status: str) -> None:
        """Set the status of every run tagged `tag=value` (e.g. trials a scheduler stopped mid-run)."""
        for run in self._search(experiment, f"tags.`{tag}` = '{value}'"):
            self.client.set_terminated(run.run_id, status)
