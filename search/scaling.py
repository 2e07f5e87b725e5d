"""`xstilts scaling CONFIG`: does the intermediate-task gain shrink as the base model grows?

For each base model, one search runs the same configurations (baseline, the best single tasks, the best
mixture) with the same seeds (`repeats`); no early stopping. Per model and configuration the gain is the
mean over seeds of (configuration - that model's own baseline) on the same seed, with a 95 % t-interval.
The trend is the slope of the paired gains against log10 parameters with its 95 % interval, and the smallest
slope the study could have detected (80 % power) — `search/slope.py`. Returns diminish only when the whole
interval is below zero; a null result says what it could have seen. `seeds: auto` adds seeds (`auto.step` more
per model per round, new searches named `<name>-<model>-s<first seed>`) until each configuration's interval
excludes zero, its detectable slope is below `auto.min_effect`, or `auto.most` seeds are used (each look at
5 % / looks, so the sequential study keeps its 5 %). Scores are the validation average of the targets the
preset scores (XTREME when all nine). Writes `<storage>/<name>/scaling.{md,json}` and `scaling.png`.
`planted: S` (toy models) adds a known trend of S points per 10x parameters to every gain (trainables/planted.py):
the study's check on itself; configs/search/scaling_planted.yaml is a world whose only trend is the planted one.

  xstilts scaling configs/search/scaling_toy.yaml     (CPU, tiny models)
  xstilts scaling scaling_planted [planted=0]         (CPU: one toy model at three nominal sizes)
  xstilts scaling configs/search/scaling.yaml --address auto
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trainables.config import _first_error
from trainables.errors import XstiltsError

class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    label: str
    overrides: list[str] = []  # pipeline overrides selecting the model (model.name=..., sizes, batch, distributed)
    search: dict = {}  # search settings for this model's trials (e.g. resources: its GPUs per worker)
    params: float | None = None  # parameter count; computed for the toy model


class AutoSeeds(BaseModel):
    """`seeds: auto`: start with `start` seeds per model, add `step` at a time, stop at `most` (search/slope.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: int = Field(3, ge=2)
    step: int = Field(2, ge=1)
    most: int = Field(12, ge=2)
    min_effect: float = Field(0.5, gt=0)  # points per 10x parameters too small to matter


class ScalingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    search: str = "configs/search/toy.yaml"  # base search settings: pipeline, storage, tracking, resources
    overrides: list[str] = []  # search overrides for every model
    models: list[ModelSpec]
    configurations: list[dict[str, float]] = [{}, {"mnli": 1.0}]
    seeds: int | Literal["auto"] = 3  # paired seeds per model and configuration; auto: until an answer (AutoSeeds)
    auto: AutoSeeds = AutoSeeds()
    # toy models only: a known answer — every gain changes by exactly this many points per 10x parameters on top of
    # whatever the toy models do (trainables/planted.py); 0 = off
    planted: float = 0.0

    @field_validator("seeds")
    @classmethod
    def _two_seeds(cls, seeds):
        if seeds != "auto" and seeds < 2:
            raise ValueError("seeds: at least 2 (a gain's interval needs two paired seeds), or auto")
        return seeds


def load_scaling_config(path, overrides=()) -> ScalingConfig:
    from trainables.config import apply_overrides, read_preset

    path, raw = read_preset(path, "scaling config", kind="search")
    try:
        return ScalingConfig.model_validate(apply_overrides(raw, list(overrides)))
    except ValidationError as exc:
        raise XstiltsError(_first_error(exc, str(path))) from None


def _search_cfg(cfg: ScalingConfig, model: ModelSpec, first: int = 0, count: int | None = None):
    """The search of one model for seeds first .. first + count - 1 (offsets from the pipeline's seed); the first
    batch keeps the plain name `<name>-<model>`."""
    from search.config import load_search_config
    from trainables.config import update

    base = load_search_config(cfg.search, list(cfg.overrides))
    count = count or (cfg.auto.start if cfg.seeds == "auto" else cfg.seeds)
    shift = [f"seed={_pipeline_seed(base, model) + first}"] if first else []
    # a declared size is also the size the toy's planted scaling truth reads (trainables/planted.py)
    nominal = [f"planted_scaling.params={model.params}"] if model.params and cfg.planted else []
    knob = [f"planted_scaling.slope={cfg.planted}"] if cfg.planted else []
    candidates = sorted({t for c in cfg.configurations for t in c}) or list(base.candidates)
    weights = [w for c in cfg.configurations for w in c.values()] or [1.0]
    return update(base, {
        "name": f"{cfg.name}-{model.label}" + (f"-s{first}" if first else ""), "num_samples": len(cfg.configurations),
        "repeats": count,
        "candidates": candidates, "weight": {"low": min(weights), "high": max(weights)},
        "points_to_evaluate": list(cfg.configurations), "scheduler": {"enabled": False},
        "max_concurrent_trials": min(base.max_concurrent_trials or len(cfg.configurations), len(cfg.configurations)),
        "overrides": list(base.overrides) + list(model.overrides) + nominal + knob + shift,
        **model.search},
        f"scaling model {model.label}")


def _pipeline_seed(scfg, model: ModelSpec) -> int:
    """The first seed of `model`'s runs: the pipeline's, unless the model's overrides set its own."""
    from trainables.config import load_config

    return load_config(scfg.pipeline, list(scfg.overrides) + list(model.overrides)).seed


def _params(scfg, model: ModelSpec) -> float:
    if model.params:
        return model.params
    from search.tuner import base_config
    from trainables.pipeline import base_model, ensure_toy_data
    from trainables.planted import encoder_params

    pcfg = base_config(scfg)
    if pcfg.model.name != "toy":
        raise XstiltsError(f"model {model.label}: give `params` (its parameter count) in the scaling config")
    ensure_toy_data(pcfg)
    return encoder_params(base_model(pcfg, Path(pcfg.data_dir), lambda *a: None))


def _per_seed(info: dict) -> dict[str, dict[int, float]]:
    """label -> seed -> validation average, from the trials' MLflow runs."""
    from search.report import label_of
    from search.summary import trial_runs
    from trainables import names

    out: dict[str, dict[int, float]] = {}
    for run in trial_runs(info["tracking_uri"], info["experiment"], info["parent_run_id"]).values():
        if run.status == "FAILED":  # a trial a killed driver lost; its retry (same mixture) has the scores
            continue
        values = names.seed_values(run.metrics, names.average("validation"))
        if not values and names.average("validation") in run.metrics:  # one seed: no per-seed metrics
            values = {int(run.params.get("seed", 0)): run.metrics[names.average("validation")]}
        out[label_of(run.mixture())] = values
    return out


def gain_stats(config: dict[int, float], baseline: dict[int, float]) -> dict:
    diffs = np.array([config[s] - baseline[s] for s in sorted(set(config) & set(baseline))])
    n = len(diffs)
    mean = float(diffs.mean()) if n else float("nan")
    half = t95(n - 1) * float(diffs.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    return {"gain": mean, "low": mean - half, "high": mean + half, "n": n}


def t95(df: int) -> float:
    """The two-sided 95 % critical value of Student's t with `df` degrees of freedom (scipy; never the normal's
    1.96, which makes intervals over a dozen seeds ~10 % too narrow)."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def run_scaling(cfg: ScalingConfig, address: str | None = None, console=None) -> dict:
    from rich.console import Console

    from search.plots import scaling_plot
    from search.slope import ALPHA, looks, sequential, slope_test
    from search.summary import unmasked
    from search.run import run_search
    from search.tuner import base_config, search_dir

    console = console or Console()
    for m in cfg.models:  # every model's settings are checked before any search runs
        base_config(_search_cfg(cfg, m))
    params = {m.label: _params(_search_cfg(cfg, m), m) for m in cfg.models}
    for m in cfg.models:
        console.print(f"[bold]{m.label}[/bold]: {params[m.label]:,.0f} parameters")
    per_seed: dict[str, dict[str, dict[int, float]]] = {m.label: {} for m in cfg.models}  # model -> label -> seed

    def collect(new: list[int]) -> dict[str, dict[float, dict[int, float]]]:
        """Run seeds `new` (indices) on every model; label -> log10 params -> seed -> paired gain, for them."""
        out: dict[str, dict[float, dict[int, float]]] = {}
        for model in cfg.models:
            scfg = _search_cfg(cfg, model, new[0], len(new))
            run_search(scfg, address=address, console=console)
            info = json.loads((search_dir(scfg) / "search.json").read_text())
            info["tracking_uri"] = unmasked(info["tracking_uri"], scfg.tracking_uri, "MLFLOW_TRACKING_URI")
            seeds = _per_seed(info)
            if "baseline" not in seeds:
                raise XstiltsError(f"{model.label}: the baseline ({{}}) must be one of the configurations")
            for label, values in seeds.items():
                per_seed[model.label].setdefault(label, {}).update(values)
                if label != "baseline":
                    out.setdefault(label, {})[math.log10(params[model.label])] = {
                        s: values[s] - seeds["baseline"][s] for s in sorted(set(values) & set(seeds["baseline"]))}
        return out

    if cfg.seeds == "auto":
        a = cfg.auto
        trend, used = sequential(collect, a.start, a.step, a.most, a.min_effect)
        level = ALPHA / looks(a.start, a.step, a.most)
    else:
        data = collect(list(range(cfg.seeds)))
        trend, used, level = {label: slope_test(d) for label, d in data.items()}, list(range(cfg.seeds)), ALPHA
    points, per_model = [], []
    for model in cfg.models:
        seeds = per_seed[model.label]
        row = {"model": model.label, "params": params[model.label],
               "baseline": float(np.mean(list(seeds["baseline"].values()))), "gains": {}}
        for label, values in seeds.items():
            if label != "baseline":
                row["gains"][label] = gain_stats(values, seeds["baseline"])
                points.append({"label": label, "model": model.label, "params": params[model.label],
                               **row["gains"][label]})
        per_model.append(row)
    for test in trend.values():
        test["diminishing"] = test["verdict"] == "diminishing"
    root = search_dir(_search_cfg(cfg, cfg.models[0])).parent / cfg.name
    root.mkdir(parents=True, exist_ok=True)
    result = {"name": cfg.name, "models": per_model, "trend": trend, "seeds": len(used), "level": level,
              "sequential": cfg.seeds == "auto", "plot": str(scaling_plot(points, root / "scaling.png")),
              **({"planted_slope_per_decade": cfg.planted} if cfg.planted else {})}
    (root / "scaling.json").write_text(json.dumps(result, indent=1))
    (root / "scaling.md").write_text(scaling_markdown(result))
    print(scaling_markdown(result))
    return result


def scaling_markdown(result: dict) -> str:
    labels = sorted({l for m in result["models"] for l in m["gains"]})
    lines = ["| model | parameters | baseline average | " + " | ".join(f"gain: {l} (95% CI)" for l in labels) + " |",
             "|---|---:|---:|" + "---:|" * len(labels)]
    for m in result["models"]:
        cells = [f"{m['gains'][l]['gain']:+.2f} [{m['gains'][l]['low']:+.2f}, {m['gains'][l]['high']:+.2f}]"
                 if l in m["gains"] else "-" for l in labels]
        lines.append(f"| {m['model']} | {m['params']:,.0f} | {m['baseline']:.2f} | " + " | ".join(cells) + " |")
    lines.append("")
    if result.get("planted_slope_per_decade"):
        lines.append(f"Planted truth (toy knob, trainables/planted.py): every gain changes by "
                     f"{result['planted_slope_per_decade']:+.2f} points per 10x parameters on top of the toy models' "
                     "own trend.\n")
    level = result.get("level", 0.05)
    for label, t in result["trend"].items():
        ci = f"{100 * (1 - level):.4g} % interval"
        if math.isnan(t["slope_per_decade"]):
            lines.append(f"- {label}: no trend (needs two model sizes and three paired gains).")
            continue
        verdict = {"diminishing": "diminishing returns (the interval is below zero)",
                   "growing": "the gain grows with size (the interval is above zero)",
                   "inconclusive": "no trend shown (the interval holds zero)"}[t["verdict"]]
        lines.append(f"- {label}: gain changes by {t['slope_per_decade']:+.2f} points per 10x parameters "
                     f"[{t['low']:+.2f}, {t['high']:+.2f}] ({ci}, {t['n']} paired gains): {verdict}; with these "
                     f"seeds the study could detect a slope of ±{t['detectable']:.2f} (80 % power)"
                     + (f"; stopped: {t['stopped_because']}" if t.get("stopped_because") else "") + ".")
    return "\n".join(lines) + "\n"
