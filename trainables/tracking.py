"""Tracking behind a small interface: one MLflow implementation, one null one. The only module that
talks to MLflow: trials and runs log through `MlflowTracker`; searches, reports and the scaling study read
runs back through `TrackingStore`.

Metric and parameter names come from `trainables.names` (`target/xnli/de/accuracy`, `target/xnli/score`,
`average`, `validation/average`, `mix/mnli`). Params and metrics go in batches (one request per call, not
one per key). The default store is SQLite under `mlflow/` (MLflow 3.17's file store is off).
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


class MlflowTracker:
    """One MLflow run (optionally nested under `parent_run_id`), written through MlflowClient in batches.

    Without `spill`, every call goes straight to the store and a failure raises (`xstilts run`, the search's
    parent run). With `spill` (a search's trials), calls are queued and sent in order; while the store is
    unreachable they stay queued, and the queue is mirrored to the `spill` file, so a tracking-server hiccup
    never fails a trial and a killed trial loses nothing: the next attempt of the trial, or the search driver
    at its end (`flush_spilled`), sends what is left. `reuse_tag` (`("ray.trial_id", id)`) finds the run a
    previous attempt made instead of making a second one. A new run carries MLflow's context tags
    (`context`, default: this process's `context_tags()`).
    """

    RETRY_S = 5.0  # while the store is down, try again at most this often

    def __init__(self, uri: str | None, experiment: str, run_name: str, parent_run_id: str | None = None,
                 tags: Mapping[str, str] | None = None, run_id: str | None = None, spill: Path | str | None = None,
                 reuse_tag: tuple[str, str] | None = None, patience_s: float = 30.0,
                 context: Mapping[str, str] | None = None):
        from mlflow import MlflowClient

        self.uri = uri or default_uri()
        if self.uri.startswith("sqlite:///"):  # the store's folder is made when a run is made, not before
            Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        if spill is not None:  # fail fast and queue, rather than block a trial in MLflow's own retries
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.client = MlflowClient(self.uri)
        all_tags = {**(context_tags() if context is None else context), **(tags or {})}  # (a new run's)
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self.experiment, self.run_name, self.tags, self.reuse_tag = experiment, run_name, all_tags, reuse_tag
        self.spill, self.patience_s = (Path(spill) if spill else None), patience_s
        self.run_id, self.experiment_id = run_id, None
        self.pending: list[list] = []
        self._down_at = 0.0
        if self.spill and self.spill.exists():  # what an earlier attempt could not send goes first
            try:
                saved = json.loads(self.spill.read_text())
                self.pending, self.run_id = saved["ops"], self.run_id or saved.get("run_id")
            except (OSError, ValueError, KeyError):
                pass
        try:
            self._connect()
        except Exception as exc:
            if self.spill is None:
                raise XstiltsError(f"MLflow tracking store {mask(self.uri)} is unreachable ({type(exc).__name__}) — "
                                   f"start the server, fix tracking.uri, or set tracking.enabled=false") from None
            self._down_at = time.time()
            self._save()

    @classmethod
    def from_spill(cls, path: Path, patience_s: float = 120.0) -> "MlflowTracker":
        saved = json.loads(Path(path).read_text())
        return cls(saved["uri"], saved["experiment"], saved["run_name"], tags=saved["tags"], run_id=saved["run_id"],
                   spill=path, reuse_tag=tuple(saved["reuse_tag"]) if saved.get("reuse_tag") else None,
                   patience_s=patience_s)

    # ------------------------------------------------------------ the store

    def _connect(self) -> None:
        """The experiment (made if new) and the run (found by `reuse_tag`, else made)."""
        if self.experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(
                self.experiment, artifact_location=artifact_location(self.uri, self.experiment))
            if not exp or exp.tags.get("mlflow.experimentKind") != "custom_model_development":
                # MLflow 3 otherwise opens experiments in its GenAI view; these are training runs
                self.client.set_experiment_tag(exp_id, "mlflow.experimentKind", "custom_model_development")
            self.experiment_id = exp_id
        if self.run_id is None and self.reuse_tag:
            key, value = self.reuse_tag
            found = self.client.search_runs([self.experiment_id], f"tags.`{key}` = '{value}'", max_results=1)
            self.run_id = found[0].info.run_id if found else None
        if self.run_id is None:
            self.run_id = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=self.tags).info.run_id
            self._save()

    def _apply(self, op: list) -> None:
        from mlflow.entities import Metric, Param, RunTag

        kind, args = op[0], op[1:]
        if kind == "params":
            for i in range(0, len(args[0]), 100):
                self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in args[0][i:i + 100]])
        elif kind == "metrics":
            for i in range(0, len(args[0]), 1000):
                self.client.log_batch(self.run_id, metrics=[Metric(k, v, ts, step) for k, v, ts, step
                                                            in args[0][i:i + 1000]])
        elif kind == "tags":
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in args[0]])
        elif kind == "text":
            self.client.log_text(self.run_id, args[0], args[1])
        elif kind == "inputs":
            from mlflow.entities import Dataset, DatasetInput, InputTag

            self.client.log_inputs(self.run_id, datasets=[
                DatasetInput(Dataset(d["name"], d["digest"], d["source_type"], d["source"]),
                             tags=[InputTag("mlflow.data.context", d["context"])]) for d in args[0]])
        elif kind == "close":
            self.client.set_terminated(self.run_id, args[0])

    def _submit(self, op: list) -> None:
        if self.spill is None:
            self._apply(op)
            return
        self.pending.append(op)
        self.flush()

    def flush(self, force: bool = False) -> bool:
        """Send what is queued, in order; False (the rest kept, and spilled) if the store is still down."""
        if not self.pending and self.run_id is not None:
            return True
        if not force and self._down_at and time.time() - self._down_at < self.RETRY_S:
            self._save()
            return False
        try:
            self._connect()
            while self.pending:
                self._apply(self.pending[0])
                self.pending.pop(0)
        except Exception:
            self._down_at = time.time()
            self._save()
            return False
        self._down_at = 0.0
        self._save()
        return True

    def flush_patiently(self) -> bool:
        """Flush, retrying for up to `patience_s`; what is still unsent stays in the spill file."""
        deadline = time.time() + self.patience_s
        while not self.flush(force=True):
            if time.time() > deadline:
                return False
            time.sleep(min(self.RETRY_S, max(0.1, deadline - time.time())))
        return True

    def _save(self) -> None:
        """Mirror the queue to the spill file (removed once everything is sent)."""
        if self.spill is None:
            return
        if not self.pending and self.run_id is not None:
            self.spill.unlink(missing_ok=True)
            return
        self.spill.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.spill.with_name(self.spill.name + ".tmp")
        tmp.write_text(json.dumps({"uri": self.uri, "experiment": self.experiment, "run_name": self.run_name,
                                   "tags": self.tags, "run_id": self.run_id, "reuse_tag": self.reuse_tag,
                                   "ops": self.pending}))
        tmp.replace(self.spill)

    # ------------------------------------------------------------ the Tracker interface

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

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def close(self, status="FINISHED"):
        self._submit(["close", status])
        if self.spill is not None:
            self.flush_patiently()


def flush_spilled(folder: Path, patience_s: float = 120.0) -> list[Path]:
    """Send what trials left in spill files under `folder` (a tracking server was down, a trial was killed
    while it was); returns the files still unsent after `patience_s`."""
    left = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            tracker = MlflowTracker.from_spill(path, patience_s=patience_s)
        except (OSError, ValueError, KeyError):
            continue
        if not tracker.flush_patiently():
            left.append(path)
    return left


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
    """Queries of a tracking store (a server or SQLite): runs by tag, children of a parent, closing runs."""

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

    def find(self, experiment: str, tag: str, value: str) -> RunRecord | None:
        runs = self._search(experiment, f"tags.`{tag}` = '{value}'", max_results=1)
        return runs[0] if runs else None

    def children(self, experiment: str, parent_run_id: str) -> list[RunRecord]:
        """The runs nested under `parent_run_id` (a search's trials)."""
        return self._search(experiment, f"tags.mlflow.parentRunId = '{parent_run_id}'")

    def running(self, experiment: str) -> list[RunRecord]:
        """The experiment's runs still RUNNING."""
        return self._search(experiment, "attributes.status = 'RUNNING'")

    def terminate(self, experiment: str, tag: str, value: str, status: str, only_running: bool = False) -> None:
        """Set the status of every run tagged `tag=value` (e.g. trials a scheduler stopped mid-run); with
        `only_running`, of those still RUNNING only (their end time is not moved)."""
        for run in self._search(experiment, f"tags.`{tag}` = '{value}'"):
            if not only_running or run.status == "RUNNING":
                self.client.set_terminated(run.run_id, status)
