"""The define-by-run search space for OptunaSearch. Only trial.suggest_* calls: no I/O, no training.

Per candidate task: in or out (`use_<task>`), and a weight when in (`w_<task>`); the empty mixture is the
pretrained baseline. Optional: sampling temperature, phase-2 and phase-3 learning rates (log scale),
phase-2 steps. `trial_overrides` turns the sampled parameters into pipeline overrides.
"""

from __future__ import annotations

from search.config import SearchConfig


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


def mixture_of(params: dict, candidates: list[str]) -> dict[str, float]:
    """The sampled mixture: weights of the tasks that are in (absent keys = not chosen)."""
    return {t: float(params[f"w_{t}"]) for t in candidates if params.get(f"use_{t}") and f"w_{t}" in params}


def point_params(mixture: dict[str, float], candidates: list[str]) -> dict:
    """A known mixture as Optuna parameters, for points_to_evaluate."""
    out: dict = {f"use_{t}": t in mixture for t in candidates}
    out.update({f"w_{t}": w for t, w in mixture.items()})
    return out


def trial_overrides(params: dict, candidates: list[str]) -> list[str]:
    mix = mixture_of(params, candidates)
    out = ["intermediate.mixture={" + ", ".join(f"{t}: {w!r}" for t, w in mix.items()) + "}"]
    for key, target in (("temperature", "intermediate.temperature"), ("intermediate_lr", "intermediate.lr"),
                        ("target_lr", "target.lr"), ("steps", "intermediate.steps")):
        if key in params:
            out.append(f"{target}={params[key]!r}")
    return out
