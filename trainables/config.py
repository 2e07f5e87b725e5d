"""Pipeline configuration: YAML + `key=value` overrides -> a validated, typed `PipelineConfig`.

Unknown keys, unknown tasks, negative or all-zero weights and targets without training data fail here,
before any training, with one line that names the problem and the choices.

  python -m trainables run configs/pipeline/toy.yaml intermediate.lr=3.0e-4 targets=[xnli,pawsx]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables.errors import XstiltsError
from trainables.tasks import INTERMEDIATE, TARGETS, TASKS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Strict):
    name: str = "toy"  # a Hub id (xlm-roberta-large), a local folder, or "toy" (built from the toy benchmark)
    revision: str | None = None
    # toy model size (phase 1 of the toy world: a short multilingual MLM on the toy corpus)
    hidden_size: int = 128
    layers: int = 3
    heads: int = 4
    mlm_steps: int = 1500
    mlm_lr: float = 1.0e-3
    # every this many phase-1 steps, a translation-ranking step on the toy's parallel sentences aligns the toy's
    # languages at the retrieval layer (as XLM-R's middle layers are aligned to a degree); 0 = MLM only
    align_every: int = Field(0, ge=0)
    retrieval_layer: float = Field(14 / 24, gt=0, le=1)  # fraction of depth: XLM-R Large's layer 14 of 24


class MlmMixin(Strict):
    weight: float = Field(0.0, ge=0)  # share of phase-2 batches that are multilingual MLM (0 = off)
    corpus: str | None = None  # one sentence per line; default: the toy corpus of data_dir


class IntermediateConfig(Strict):
    mixture: dict[str, float] = {}  # task -> weight (explicit sampler) ; {} = skip phase 2 (the baseline)
    sampler: Literal["explicit", "proportional", "capped", "temperature", "uniform"] = "explicit"
    temperature: float = Field(1.0, gt=0)
    cap: int | None = Field(None, gt=0)
    # Length: a number of optimiser steps, or (jiant) epochs -> steps = sum over the mixture's tasks of
    # epochs x ceil(min(n_task, cap) / (batch_size x grad_accum)). Set one, the other to null.
    steps: int | None = Field(1000, ge=0)
    epochs: float | None = Field(None, gt=0)
    lr: float = Field(1.0e-5, gt=0)
    batch_size: int = Field(32, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_length: int = Field(256, gt=8)
    max_train_examples: int | None = Field(None, gt=0)
    mlm: MlmMixin = MlmMixin()
    translated_dir: str | None = None  # machine-translated intermediate data, same layout and schema

    @field_validator("mixture")
    @classmethod
    def _check_mixture(cls, mixture: dict[str, float]) -> dict[str, float]:
        for name, weight in mixture.items():
            if name not in INTERMEDIATE:
                raise ValueError(f"unknown intermediate task {name!r} — choose from {', '.join(INTERMEDIATE)}")
            if not math.isfinite(weight):
                raise ValueError(f"weight {weight} for {name} — weights must be finite numbers >= 0")
            if weight < 0:
                raise ValueError(f"negative weight {weight} for {name} — weights must be >= 0")
        if mixture and not any(mixture.values()):
            raise ValueError("all mixture weights are zero — give one a positive weight, or use {} for the baseline")
        return mixture

    @model_validator(mode="after")
    def _one_length(self) -> "IntermediateConfig":
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of intermediate.steps and intermediate.epochs (the other to null)")
        return self

    def total_steps(self, sizes: dict[str, int]) -> int:
        """Optimiser steps of phase 2: `steps`, or jiant's epochs rule over the mixture's training-set sizes."""
        if self.steps is not None:
            return self.steps
        per_batch = self.batch_size * self.grad_accum
        return sum(math.ceil(self.epochs * math.ceil(min(n, self.cap or n) / per_batch)) for n in sizes.values())


class SelectionConfig(Strict):
    """Model selection while a target fine-tunes, as jiant's runner does (`jiant/proj/main/metarunner.py`,
    the XTREME recipe's `--eval_every_steps 1000 --no_improvements_for_n_evals 30`, `eval_subset_num 500`):
    score the first `subset` English selection examples after every `every_steps` optimiser steps and after the
    last, keep the best model, stop after `patience` validations without improvement (0: never)."""

    every_steps: int = Field(1000, gt=0)
    subset: int = Field(500, gt=0)
    patience: int = Field(30, ge=0)


class TargetConfig(Strict):
    lr: float = Field(1.0e-5, gt=0)
    epochs: dict[str, float] = {}  # per target; default from jiant's recipe (EPOCHS)
    batch_size: int = Field(32, gt=0)
    qa_batch_size: int = Field(16, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_length: int = Field(256, gt=8)
    qa_max_length: int = Field(384, gt=8)
    retrieval_max_length: int = Field(512, gt=8)
    doc_stride: int = Field(128, gt=0)
    max_train_examples: int | None = Field(None, gt=0)
    eval_batch_size: int = Field(64, gt=0)
    max_eval_examples: int | None = Field(None, gt=0)  # per language; None = all
    selection: SelectionConfig = SelectionConfig()


class DistributedConfig(Strict):
    """Training on several workers of one trial (Ray Train, launched by `xstilts run` or a search trial).
    The global batch stays `batch_size x grad_accum`: each worker runs batch_size / workers rows of it."""

    workers: int = Field(1, ge=1)
    strategy: Literal["none", "ddp", "fsdp"] = "none"  # ddp: replicas (speed); fsdp: FSDP2 shards (size)
    mixed_precision: Literal["bf16", "fp32"] = "bf16"  # bf16 compute on GPUs (CPUs compute in fp32)
    activation_checkpointing: bool = False  # recompute each layer in the backward pass (less memory)

    @model_validator(mode="after")
    def _consistent(self) -> "DistributedConfig":
        if self.workers > 1 and self.strategy == "none":
            raise ValueError(f"workers={self.workers} needs strategy ddp or fsdp")
        return self


class CheckpointConfig(Strict):
    """Checkpoints of a job in progress (phase 2, a phase-3 fine-tune), so a preempted or failed attempt resumes
    where it stopped: on one process in `<cache_dir>/checkpoints/<job>`, on Ray Train workers sharded in
    `<cache_dir>/ray-train/<job>`; both removed once the job's cache entry is published. Not part of any cache key."""

    minutes: float = Field(30.0, gt=0)  # wall time between checkpoints (an XL checkpoint is ~56 GB: not too often)
    steps: int | None = Field(None, gt=0)  # instead: every this many optimiser steps (tests, tiny jobs)


class TrackingConfig(Strict):
    enabled: bool = True
    uri: str | None = None  # default: MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlflow/mlflow.db
    experiment: str = "xstilts-runs"


class PlantedScalingConfig(Strict):
    """The toy's planted scaling truth (trainables/planted.py): scores of runs with intermediate training move by
    slope x log10(params / 1e6) points. Toy model only; 0 = off."""

    slope: float = 0.0  # points per 10x parameters
    params: float | None = Field(None, gt=0)  # a nominal size; None: the toy encoder's parameter count


def loader_workers(cfg: "PipelineConfig", device) -> int:
    return cfg.data_workers if cfg.data_workers is not None else (2 if device.type == "cuda" else 0)


class PipelineConfig(Strict):
    name: str = "run"
    seed: int = 0
    data_dir: str | None = None
    cache_dir: str = ".xstilts/cache"
    output_dir: str = "runs"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: ModelConfig = ModelConfig()
    intermediate: IntermediateConfig = IntermediateConfig()
    targets: list[str] = list(TARGETS)
    target: TargetConfig = TargetConfig()
    eval_splits: list[Literal["validation", "test"]] = ["validation", "test"]
    # a search's trials (search `finalists`): test work that needs a computation of its own — retrieval's test
    # corpora, a fine-tune that serves only test-only targets — is left to the finalists (trainables/rungs.py)
    defer_test: bool = False
    distributed: DistributedConfig = DistributedConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    # DataLoader processes that collate the next training batches while the model trains; None: 2 on a GPU,
    # 0 on a CPU (where they would compete with training for the same cores)
    data_workers: int | None = Field(None, ge=0)
    tracking: TrackingConfig = TrackingConfig()
    progress: bool = True
    planted_scaling: PlantedScalingConfig = PlantedScalingConfig()  # toy only: a known answer for `xstilts scaling`
    # torch CPU threads for this run; None: torch's default (every core; a Ray trial: its CPUs). Float sums
    # depend on how kernels split them over threads, so a fixed count gives the same scores on any machine.
    threads: int | None = Field(None, ge=1)

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, targets: list[str]) -> list[str]:
        if not targets:
            raise ValueError(f"no targets — name at least one, e.g. targets=[xnli] (all: {', '.join(TARGETS)})")
        for t in targets:
            if t not in TARGETS:
                raise ValueError(f"unknown target {t!r} — choose from {', '.join(TARGETS)}")
        return targets

    @model_validator(mode="after")
    def _check_planted(self) -> "PipelineConfig":
        if self.planted_scaling.slope and self.model.name != "toy":
            raise ValueError(f"planted_scaling (a scaling study's `planted`) is the toy world's known answer; model "
                             f"{self.model.name!r} has its own — set it to 0, or use toy models only")
        return self

    @model_validator(mode="after")
    def _check_target_training(self) -> "PipelineConfig":
        for t in self.targets:
            spec = TASKS[t]
            if spec.kind != "retrieval" and not any("train" in s.splits for s in TASKS[spec.train_on].sources):
                raise ValueError(f"target {t} has no training data (train_on={spec.train_on})")
        return self


def _parse_override(item: str) -> tuple[list[str], object]:
    if "=" not in item:
        raise XstiltsError(f"override {item!r} is not key=value", "write it as e.g. intermediate.lr=1.0e-5")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict: `intermediate.mixture.mnli=1.0`, `targets=[xnli,pawsx]`."""
    raw = dict(raw)
    for item in overrides:
        keys, value = _parse_override(item)
        node = raw
        for k in keys[:-1]:
            node[k] = dict(node.get(k) or {})
            node = node[k]
        node[keys[-1]] = value
    return raw


def _merge(base: dict, updates: dict) -> dict:
    out = dict(base)
    for key, value in updates.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) and key != "mixture" else value
    return out


def update(cfg: BaseModel, updates: dict, source: str = "update"):
    """A copy of a config (pipeline or search) with nested typed `updates` applied (`{"intermediate": {"lr":
    1e-5}}`) and validated; a mixture is replaced whole. No strings are parsed: values arrive as they are."""
    try:
        return type(cfg).model_validate(_merge(cfg.model_dump(), updates))
    except ValidationError as exc:
        raise XstiltsError(_first_error(exc, source)) from None


def _first_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key — check the spelling against the toy preset (xstilts presets)"
    elif " — " not in msg:
        msg += f" — fix {where} in the preset or on the command line"
    return f"{source}: {where}: {msg}"


def validate(raw: dict, source: str = "config") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise XstiltsError(_first_error(exc, source)) from None


def read_preset(ref: str | Path, what: str = "config", kind: str = "pipeline") -> tuple[str, dict]:
    """A YAML preset by path or name (`trainables.presets`) as a mapping (safe_load); one clear line on any
    problem (missing, malformed, not a mapping, YAML tags that would construct objects)."""
    from trainables.presets import find

    where, text = find(ref, kind)
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.constructor.ConstructorError as exc:  # !!python/object and friends: never constructed
        raise XstiltsError(f"{where} uses a YAML tag that would construct an object ({exc.problem})",
                           "write plain values (numbers, strings, lists, mappings)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise XstiltsError(f"malformed YAML in {where}{line} — fix the syntax (plain values only: no !!python "
                           f"or other tags)") from None
    if not isinstance(raw, dict):
        raise XstiltsError(f"{where} must hold a mapping of keys, not {type(raw).__name__}",
                           "write `key: value` lines, as the packaged presets do (xstilts presets)")
    return where, raw


def load_config(path: str | Path | None, overrides: list[str] = (), home: Path | None = None) -> PipelineConfig:
    """Read a YAML preset (by path or name; safe_load), apply overrides, validate. Relative paths in it resolve
    against `home` (a search: its storage), else XSTILTS_HOME, else the working directory; XSTILTS_CACHE sets
    cache_dir unless an override does."""
    raw: dict = {}
    where = "config"
    if path is not None:
        where, raw = read_preset(path, "config")
    cfg = validate(apply_overrides(raw, list(overrides)), where)
    return locate(cfg, explicit_cache=any(o.split("=", 1)[0].strip() == "cache_dir" for o in overrides), home=home)


def locate(cfg: PipelineConfig, explicit_cache: bool = False, home: Path | None = None) -> PipelineConfig:
    """Absolute paths: relative ones against `home`, else XSTILTS_HOME or the working directory; XSTILTS_CACHE
    for the cache."""
    import os

    from trainables.presets import under_home

    def resolve(path: str | None) -> str | None:
        if home is None or path is None or "://" in str(path) or Path(path).expanduser().is_absolute():
            return under_home(path)
        return str(Path(home) / path)

    cache = cfg.cache_dir if explicit_cache or not os.environ.get("XSTILTS_CACHE") else os.environ["XSTILTS_CACHE"]
    return cfg.model_copy(update={"data_dir": resolve(cfg.data_dir), "cache_dir": resolve(cache),
                                  "output_dir": resolve(cfg.output_dir)})
