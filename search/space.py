"""The search space, and the one conversion between Optuna's parameters and a typed `TrialSpec`.

`define_space` is the define-by-run space of the search's Optuna study (search/searcher.py): only
`trial.suggest_*` calls, no I/O, no training. Per candidate task: in or out (`use_<task>`), and a weight when in
(`w_<task>`); the empty mixture is the pretrained baseline. Optional: sampling temperature, phase-2 and phase-3 learning rates (log scale),
phase-2 steps. `TrialSpec.from_params` / `.to_params` are the only translations between those parameters
and the values a trial runs with; `TrialSpec.pipeline_config` turns a spec into a `PipelineConfig` by a typed
update of the search's base config (no override strings).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from search.config import SearchConfig
from trainables.config import PipelineConfig, update

TUNED = {"temperature": ("intermediate", "temperature"), "intermediate_lr": ("intermediate", "lr"),
         "target_lr": ("target", "lr"), "steps": ("intermediate", "steps")}


def define_space(trial, cfg: SearchConfig) -> dict:
    for task in cfg.candidates:
        if trial.suggest_categorical(f"use_{task}", [True, False]):
            trial.suggest_float(f"w_{task}", cfg.weight.low, cfg.weight.high)
    if cfg.temperature:
        trial.suggest_float("temperature", cfg.temperature.low, cfg.temperature.high, log=True)
    if cfg.intermediate_lr:
        trial.suggest_float("intermediate_lr", cfg.intermediate_lr.low, cfg.intermediate_lr.high, log=True)
    if cfg.target_lr:
        trial.suggest_float("target_lr", cfg.target_lr.low, cfg.target_lr.high, log=True)
    if cfg.steps:
        trial.suggest_categorical("steps", list(cfg.steps))
    return {"optuna_trial": trial.number}  # rides along into the trial's config (for tags)


@dataclass(frozen=True)
class TrialSpec:
    """What one trial runs: mixture weights (absent = not chosen), and the tuned settings it overrides (None:
    the base pipeline's value). `seed` is the pipeline seed of one run of the configuration."""

    mixture: Mapping[str, float] = field(default_factory=dict)
    temperature: float | None = None
    intermediate_lr: float | None = None
    target_lr: float | None = None
    steps: int | None = None
    seed: int = 0

    @classmethod
    def from_params(cls, params: Mapping, candidates, seed: int = 0) -> "TrialSpec":
        mixture = {t: float(params[f"w_{t}"]) for t in candidates if params.get(f"use_{t}") and f"w_{t}" in params}
        tuned = {k: params[k] for k in TUNED if params.get(k) is not None}
        if "steps" in tuned:
            tuned["steps"] = int(tuned["steps"])
        return cls(mixture=mixture, seed=seed, **{k: (v if k == "steps" else float(v)) for k, v in tuned.items()})

    def to_params(self, candidates) -> dict:
        """The spec as Optuna parameters (for points_to_evaluate)."""
        out: dict = {f"use_{t}": t in self.mixture for t in candidates}
        out.update({f"w_{t}": w for t, w in self.mixture.items()})
        out.update({k: getattr(self, k) for k in TUNED if getattr(self, k) is not None})
        return out

    def with_seed(self, seed: int) -> "TrialSpec":
        return replace(self, seed=seed)

    def pipeline_config(self, base: PipelineConfig) -> PipelineConfig:
        updates: dict = {"seed": self.seed, "intermediate": {"mixture": dict(self.mixture)}}
        for name, (section, key) in TUNED.items():
            if getattr(self, name) is not None:
                updates.setdefault(section, {})[key] = getattr(self, name)
        if self.steps is not None:  # a searched step count replaces an epochs-based length
            updates["intermediate"]["epochs"] = None
        return update(base, updates, "trial config")
