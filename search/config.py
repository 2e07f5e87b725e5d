"""Search configuration: a YAML preset (+ key=value overrides) -> a validated `SearchConfig`.

A search names a pipeline preset (what one trial runs) and the space around it: candidate intermediate
tasks, weight bounds, learning-rate bounds (log scale), phase-2 step choices, optional sampling
temperature, known mixtures to try first, trials, concurrency, resources, early stopping, repeats, and the
objectives: the validation average alone, or `[average, cost]` (Optuna's multi-objective TPE; the summary
then names the Pareto front of score against accelerator-hours).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables.config import _first_error, apply_overrides, read_preset
from trainables.errors import XstiltsError
from trainables.tasks import INTERMEDIATE


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bounds(Strict):
    low: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "Bounds":
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        return self


class Resources(Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)  # whole or fractional GPUs per trial (0.5: two trials share a GPU)
    fan_out: int = Field(1, ge=1)  # >1: that many extra bundles (cpu, gpu each) fine-tune targets in parallel
    gpu_memory_gb: float | None = Field(None, gt=0)  # memory of one GPU: trials that cannot fit are refused


class Scheduler(Strict):
    enabled: bool = True  # ASHA over the per-target rungs
    grace_period: int = Field(2, ge=1)
    reduction_factor: int = Field(2, ge=2)
    protect_seeded: bool = True  # the seeded points (baseline, known mixtures) always run to the last rung


class Replay(Strict):
    """Trials replay a recorded grid instead of training (search/replay.py; benchmarks/driver_scale.py): each
    rung sleeps its recorded wall time x `time_scale` and reports its recorded metrics."""

    record: str  # e.g. benchmarks/records/toy_grid.json (benchmarks/search_efficiency.py --record writes one)
    time_scale: float = Field(1.0, ge=0)

    @field_validator("record")
    @classmethod
    def _exists(cls, record: str) -> str:
        path = Path(record).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"replay record {record} does not exist")
        return str(path)  # absolute: trials run in other folders


class Proxy(Strict):
    """Choose mixtures on a smaller model, confirm the best on the search's own (search/proxy.py)."""

    model: str | None = None  # the proxy's model.name (e.g. xlm-roberta-base); None: the overrides say it
    overrides: list[str] = []  # more pipeline overrides for the proxy (the toy model: its size)
    top_k: int = Field(3, ge=1)  # mixtures carried over to the search's model (plus its baseline)
    search: dict = {}  # search settings of the proxy stage only (e.g. num_samples, resources)


class SearchConfig(Strict):
    name: str = "toy"
    pipeline: str = "configs/pipeline/toy.yaml"
    overrides: list[str] = []  # key=value applied to the pipeline preset
    storage: str = "runs/searches"
    num_samples: int = Field(8, ge=1)
    max_concurrent_trials: int | None = Field(2, ge=1)  # None: as many trials as the Ray cluster's resources hold
    candidates: list[str] = ["mnli", "qqp", "squad_v1", "sst2"]
    weight: Bounds = Bounds(low=0.05, high=1.0)
    temperature: Bounds | None = None  # None: not searched (T = 1)
    intermediate_lr: Bounds | None = None  # None: the pipeline preset's value
    target_lr: Bounds | None = None
    steps: list[int] | None = None  # phase-2 step choices; None: the preset's
    points_to_evaluate: list[dict[str, float]] = []  # known mixtures tried first ({} = the baseline)
    repeats: int = Field(1, ge=1)  # seeds per configuration; objective = their mean
    seed: int = 0  # TPE's seed
    max_failures: int = Field(2, ge=0)
    resources: Resources = Resources()
    scheduler: Scheduler = Scheduler()
    tracking_uri: str | None = None  # default: the pipeline's (SQLite under mlflow/)
    # The Optuna study: default SQLite in the search folder; a team server: postgresql+psycopg://user@host/db
    # (the driver is the only Optuna client, so SQLite on the driver's disk is enough for one search at a time)
    optuna_storage: str | None = None
    experiment: str | None = None  # default: "xstilts-search-<name>"
    # [average]: maximise the validation average. [average, cost]: also minimise the trial's accelerator-hours
    # (GPU-hours when resources.gpu > 0, else CPU-hours); ASHA still stops trials on the average alone.
    objectives: list[str] = ["average"]
    replay: Replay | None = None  # a benchmark of the driver: trials replay a record, nothing trains
    # Test work only for finalists: the seeded points plus the top `finalists` trials by validation. Trials
    # compute what the objective needs (and the test splits of the models they fine-tune anyway); the test work
    # that would need a computation of its own (retrieval's test corpora, a fine-tune serving only test-only
    # targets: trainables/rungs.py) runs for the finalists once the trials are done (search/finalists.py).
    # None: every trial computes everything. Off by itself when every trial would be a finalist.
    finalists: int | None = Field(3, ge=0)
    # Search on a smaller model first, then run its top_k mixtures and the baseline on this one, ranked both
    # ways with their rank correlation (search/proxy.py). None: search on this model directly.
    proxy: Proxy | None = None
    # Where trials read data and keep the cache: default, the pipeline preset's paths, relative ones resolved
    # under `storage` (shared storage on a cluster), absolute ones and XSTILTS_CACHE as they are. Every node must
    # see them as the driver does: checked on each node before the first trial (search/cluster.py).
    data_dir: str | None = None
    cache_dir: str | None = None
    # Environment variables forwarded to every trial on every node (Ray's runtime_env), besides the fixed
    # HF_* and XSTILTS_* (search/cluster.py FORWARDED; not MLFLOW_TRACKING_*: trials never talk to MLflow).
    # Names only: values come from the driver's environment and are never written anywhere by xstilts.
    env: list[str] = []

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, objectives: list[str]) -> list[str]:
        if objectives not in (["average"], ["average", "cost"]):
            raise ValueError(f"objectives {objectives} — use [average] or [average, cost]")
        return objectives

    @field_validator("env")
    @classmethod
    def _env_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name or not all(c.isalnum() or c == "_" for c in name) or name[0].isdigit():
                raise ValueError(f"env: {name!r} is not an environment variable name — list names, e.g. [WANDB_API_KEY]")
        return names

    @field_validator("candidates")
    @classmethod
    def _known(cls, candidates: list[str]) -> list[str]:
        for c in candidates:
            if c not in INTERMEDIATE:
                raise ValueError(f"unknown intermediate task {c!r} — choose from {', '.join(INTERMEDIATE)}")
        return candidates

    @model_validator(mode="after")
    def _points(self) -> "SearchConfig":
        for point in self.points_to_evaluate:
            for task, weight in point.items():
                if task not in self.candidates:
                    raise ValueError(f"points_to_evaluate: {task!r} is not a candidate ({', '.join(self.candidates)})")
                if not self.weight.low <= weight <= self.weight.high:
                    raise ValueError(f"points_to_evaluate: weight {weight} of {task} is outside "
                                     f"[{self.weight.low}, {self.weight.high}]")
        return self

    @property
    def cost_metric(self) -> str:
        """The trial metric the cost objective reads (what each rung reports, cumulative)."""
        return "cost/gpu_hours" if self.resources.gpu else "cost/cpu_hours"

    @property
    def defers_test(self) -> bool:
        """Whether trials leave test work to the finalists (some trial would not be one)."""
        return (self.finalists is not None and self.replay is None
                and self.num_samples > len(self.points_to_evaluate) + self.finalists)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def experiment_name(self) -> str:
        return self.experiment or f"xstilts-search-{self.name}"


def load_search_config(path: str | Path | None, overrides: list[str] = ()) -> SearchConfig:
    """A search preset by path or name; `storage` resolves against XSTILTS_HOME (else the working directory)."""
    from trainables.presets import under_home

    raw: dict = {}
    where = "search config"
    if path is not None:
        where, raw = read_preset(path, "search config", kind="search")
    try:
        cfg = SearchConfig.model_validate(apply_overrides(raw, list(overrides)))
    except ValidationError as exc:
        raise XstiltsError(_first_error(exc, where)) from None
    return cfg.model_copy(update={"storage": under_home(cfg.storage)})
