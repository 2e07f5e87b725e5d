"""Tracking behind a small interface. The only module that talks to MLflow: runs are written through
`RunWriter` (in batches), either at once (`MlflowTracker`: `xstilts run`, a search's parent run) or, for a
search's trials, recorded in the trial (`RecordingTracker`), put in each rung's checkpoint and written by the
search's driver (search/tracking.py); searches, reports and the scaling study read runs back through
`TrackingStore`.

Metric and parameter names come from `trainables.names` (`target/xnli/de/accuracy`, `target/xnli/score`,
`average`, `validation/average`, `mix/mnli`). Params, tags and metrics go in batches (`log_batch`, not one request
per key). The default store is SQLite under `mlflow/` (MLflow 3.17's file store is off).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
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
    def log_inputs(self, datasets: list[dict]) -> None: ...
    def close(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    run_id = None

    def log_params(self, params): pass
    def log_metrics(self, metrics, step=0): pass
    def set_tags(self, tags): pass
    def log_dict(self, data, name): pass
    def log_inputs(self, datasets): pass
    def close(self, status="FINISHED"): pass
    def drain(self): return []


def default_uri() -> str:
    """MLFLOW_TRACKING_URI, else SQLite at <XSTILTS_HOME or the working directory>/mlflow/mlflow.db."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from trainables.presets import home

    return f"sqlite:///{home() / 'mlflow' / 'mlflow.db'}"


@functools.lru_cache(maxsize=1)
def context_tags() -> dict[str, str]:
    """MLflow's context tags for the runs this process makes: what MLflow resolves itself (`mlflow.user`,
    `mlflow.source.name`, `mlflow.source.type`), the git commit, branch, remote and dirtiness of the xstilts
    checkout the code runs from (MLflow's own git context needs GitPython and looks at the entry script, which in a
    trial is Ray's worker), and `xstilts.version`. A search computes them on its driver and gives them to its
    trials."""
    from importlib.metadata import PackageNotFoundError, version

    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils import mlflow_tags as T

    tags = {k: str(v) for k, v in resolve_tags({}).items()}
    if tags.get(T.MLFLOW_SOURCE_NAME) in (None, "-", ""):
        tags[T.MLFLOW_SOURCE_NAME] = Path(sys.argv[0]).name or "python"
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    if (root / ".git").exists() and git("rev-parse", "HEAD"):
        tags[T.MLFLOW_GIT_COMMIT] = git("rev-parse", "HEAD")
        for key, value in ((T.MLFLOW_GIT_BRANCH, git("rev-parse", "--abbrev-ref", "HEAD")),
                           (T.MLFLOW_GIT_REPO_URL, git("config", "--get", "remote.origin.url")),
                           (T.MLFLOW_GIT_DIRTY, None if (s := git("status", "--porcelain", "--untracked-files=no"))
                            is None else str(bool(s)).lower())):
            if value:
                tags[key] = mask(value)
    try:
        tags["xstilts.version"] = version("xstilts")
    except PackageNotFoundError:
        pass
    return tags


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside the database (MLflow's default, ./mlruns, would follow the
    CWD of whichever process logs first); a tracking server manages its own."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts" / experiment).as_uri()


class OpsTracker:
    """The Tracker interface as a list of operations, each a JSON-able list: `["params", [[k, v], ...]]`,
    `["metrics", [[k, v, timestamp_ms, step], ...]]`, `["tags", [[k, v], ...]]`, `["text", text, name]`,
    `["inputs", [dataset, ...]]`, `["open", start_ms]`, `["close", status, end_ms]`. Values are masked,
    parameters whose names hint at a secret (HF_TOKEN) are dropped, NaN metrics are dropped. Subclasses say where
    operations go."""

    run_id: str | None = None

    def _submit(self, op: list) -> None:
        raise NotImplementedError

    def log_params(self, params):
        items = [[k, mask(str(v))[:6000]] for k, v in params.items()
                 if not any(h in k.lower() for h in SECRET_HINTS)]  # never log secrets such as HF_TOKEN
        self._submit(["params", items])

    def log_metrics(self, metrics, step=0):
        ts = int(time.time() * 1000)
        self._submit(["metrics", [[k, float(v), ts, step] for k, v in metrics.items() if v is not None and v == v]])

    def set_tags(self, tags):
        self._submit(["tags", [[k, mask(str(v))] for k, v in tags.items()]])

    def log_dict(self, data, name):
        self._submit(["text", json.dumps(mask(data), indent=1, default=str), name])

    def log_inputs(self, datasets: list[dict]) -> None:
        """Dataset inputs ({name, digest, source_type, source, context}: trainables.tasks.dataset_inputs)."""
        if datasets:
            self._submit(["inputs", mask(list(datasets))])

    def log_text(self, text: str, name: str) -> None:
        self._submit(["text", mask(text), name])

    def close(self, status="FINISHED"):
        self._submit(["close", status])


class RecordingTracker(OpsTracker):
    """A search trial's tracker: it only records. The trial puts what it recorded in each rung's checkpoint
    (search/trainable.py `report_rung`), and the search's driver writes it to the trial's MLflow run
    (search/tracking.py `TrackTrials`): trials never talk to MLflow. Closing is the driver's too, with Ray's
    verdict."""

    def __init__(self):
        self.ops: list[list] = []

    def _submit(self, op: list) -> None:
        self.ops.append(op)

    def close(self, status="FINISHED"):
        pass

    def drain(self) -> list[list]:
        """What was recorded since the last drain, oldest first."""
        ops, self.ops = self.ops, []
        return ops


class RunWriter:
    """Writes operations (`OpsTracker`'s) to runs of one tracking store, through MlflowClient, in batches: every
    parameter, tag and metric of a list of operations goes in as few `log_batch` requests as MLflow's limits allow
    (100 params, 100 tags, 1,000 metrics each); within one `send`, a tag given twice keeps its latest value (MLflow
    refuses a parameter whose value changes)."""

    def __init__(self, uri: str):
        from mlflow import MlflowClient

        self.uri = uri
        if uri.startswith("sqlite:///"):  # the store's folder is made when a run is made, not before
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(uri)
        self._experiments: dict[str, str] = {}

    def experiment(self, name: str) -> str:
        """The experiment's id (made if new)."""
        if name not in self._experiments:
            exp = self.client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(
                name, artifact_location=artifact_location(self.uri, name))
            if not exp or exp.tags.get("mlflow.experimentKind") != "custom_model_development":
                # MLflow 3 otherwise opens experiments in its GenAI view; these are training runs
                self.client.set_experiment_tag(exp_id, "mlflow.experimentKind", "custom_model_development")
            self._experiments[name] = exp_id
        return self._experiments[name]

    def create(self, experiment: str, run_name: str, tags: Mapping[str, str], start_time: int | None = None) -> str:
        return self.client.create_run(self.experiment(experiment), start_time=start_time, run_name=run_name,
                                      tags=dict(tags)).info.run_id

    def find(self, experiment: str, tags: Mapping[str, str]) -> str | None:
        """The run carrying all of `tags`, if any."""
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        found = self.client.search_runs([self.experiment(experiment)], query, max_results=1)
        return found[0].info.run_id if found else None

    def send(self, run_id: str, ops: list[list]) -> None:
        """Apply `ops` to the run, in order: parameters, tags and metrics gathered into batches until an operation
        of another kind (text, inputs, open, close) comes, which goes after them."""
        params: dict[str, str] = {}
        tags: dict[str, str] = {}
        metrics: dict[tuple, float] = {}
        for op in ops:
            kind = op[0]
            if kind == "params":
                params.update((k, v) for k, v in op[1])
            elif kind == "tags":
                tags.update((k, v) for k, v in op[1])
            elif kind == "metrics":
                metrics.update(((k, ts, step), v) for k, v, ts, step in op[1])
            else:
                self._batch(run_id, params, tags, metrics)
                params, tags, metrics = {}, {}, {}
                self._apply(run_id, op)
        self._batch(run_id, params, tags, metrics)

    def _batch(self, run_id: str, params: dict, tags: dict, metrics: dict) -> None:
        from mlflow.entities import Metric, Param, RunTag

        p = [Param(k, v) for k, v in params.items()]
        t = [RunTag(k, v) for k, v in tags.items()]
        m = [Metric(k, v, ts, step) for (k, ts, step), v in metrics.items()]
        for i in range(0, len(p), 100):
            self.client.log_batch(run_id, params=p[i:i + 100])
        for i in range(0, len(t), 100):
            self.client.log_batch(run_id, tags=t[i:i + 100])
        for i in range(0, len(m), 1000):
            self.client.log_batch(run_id, metrics=m[i:i + 1000])

    def _apply(self, run_id: str, op: list) -> None:
        kind = op[0]
        if kind == "text":
            self.client.log_text(run_id, op[1], op[2])
        elif kind == "inputs":
            from mlflow.entities import Dataset, DatasetInput, InputTag

            self.client.log_inputs(run_id, datasets=[
                DatasetInput(Dataset(d["name"], d["digest"], d["source_type"], d["source"]),
                             tags=[InputTag("mlflow.data.context", d["context"])]) for d in op[1]])
        elif kind == "open":  # a run taken up again (a resumed trial) is RUNNING until its next close
            self.client.update_run(run_id, status="RUNNING")
        elif kind == "close":  # ["close", status] or ["close", status, end time in ms]
            self.client.set_terminated(run_id, op[1], end_time=op[2] if len(op) > 2 else None)
        else:
            raise ValueError(f"unknown tracking operation {kind!r}")


class MlflowTracker(OpsTracker):
    """One MLflow run (optionally nested under `parent_run_id`), written at once, in batches; a failure raises.
    Used where the process that computes is the one that logs: `xstilts run`, a search's parent run, reports.
    A new run carries MLflow's context tags (`context`, default: this process's `context_tags()`)."""

    def __init__(self, uri: str | None, experiment: str, run_name: str, parent_run_id: str | None = None,
                 tags: Mapping[str, str] | None = None, run_id: str | None = None,
                 context: Mapping[str, str] | None = None):
        self.uri = uri or default_uri()
        self.experiment, self.run_name = experiment, run_name
        all_tags = {**(context_tags() if context is None else context), **(tags or {})}  # (a new run's)
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        try:
            self.writer = RunWriter(self.uri)
            self.run_id = run_id or self.writer.create(experiment, run_name, all_tags)
        except Exception as exc:
            raise XstiltsError(f"MLflow tracking store {mask(self.uri)} is unreachable ({type(exc).__name__}) — "
                               f"start the server, fix tracking.uri, or set tracking.enabled=false") from None
        self.client = self.writer.client

    def _submit(self, op: list) -> None:
        self.writer.send(self.run_id, [op])

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)


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


def _record(run) -> RunRecord:
    return RunRecord(run.info.run_id, run.info.status, dict(run.data.params), dict(run.data.metrics),
                     dict(run.data.tags))


class TrackingStore:
    """Queries of a tracking store (a server or SQLite): a run, a search's children, runs still RUNNING."""

    def __init__(self, uri: str):
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(uri)

    def experiment_id(self, experiment: str) -> str | None:
        exp = self.client.get_experiment_by_name(experiment)
        return exp.experiment_id if exp else None

    def _search(self, experiment: str, filter_string: str, max_results: int | None = None) -> list[RunRecord]:
        """Every matching run (page after page), or the first `max_results`."""
        exp_id = self.experiment_id(experiment)
        if exp_id is None:
            return []
        out, token = [], None
        while True:
            page = self.client.search_runs([exp_id], filter_string, max_results=min(max_results or 5000, 5000),
                                           page_token=token)
            out += [_record(r) for r in page]
            token = page.token
            if not token or (max_results and len(out) >= max_results):
                return out[:max_results] if max_results else out

    def run(self, run_id: str) -> RunRecord:
        return _record(self.client.get_run(run_id))

    def children(self, experiment: str, parent_run_id: str) -> list[RunRecord]:
        """The runs nested under `parent_run_id` (a search's trials)."""
        return self._search(experiment, f"tags.mlflow.parentRunId = '{parent_run_id}'")

    def running(self, experiment: str) -> list[RunRecord]:
        """The experiment's runs still RUNNING."""
        return self._search(experiment, "attributes.status = 'RUNNING'")
