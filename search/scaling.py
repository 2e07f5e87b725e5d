"""`xstilts scaling CONFIG`: does the intermediate-task gain shrink as the base model grows?

For each base model, one search runs the same configurations (baseline, the best single tasks, the best
mixture) with the same seeds (`repeats`); no early stopping. Per model and configuration the gain is the
mean over seeds of (configuration - that model's own baseline) on the same seed, with a 95 % t-interval.
Returns diminish when the gain falls as parameters grow (slope of gain against log10 parameters < 0).
Scores are the validation average of the targets the preset scores (XTREME when all nine).
Writes `<storage>/<name>/scaling.{md,json}` and `scaling.png`.

  xstilts scaling configs/search/scaling_toy.yaml     (CPU, tiny models)
  xstilts scaling configs/search/scaling.yaml --address auto
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainables.config import _first_error
from trainables.errors import XstiltsError

T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}  # two-sided t, df = n-1


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    label: str
    overrides: list[str] = []  # pipeline overrides selecting the model (model.name=..., sizes, batch, distributed)
    search: dict = {}  # search settings for this model's trials (e.g. resources: its GPUs per worker)
    params: float | None = None  # parameter count; computed for the toy model


class ScalingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    search: str = "configs/search/toy.yaml"  # base search settings: pipeline, storage, tracking, resources
    overrides: list[str] = []  # search overrides for every model
    models: list[ModelSpec]
    configurations: list[dict[str, float]] = [{}, {"mnli": 1.0}]
    seeds: int = Field(3, ge=2)


def load_scaling_config(path, overrides=()) -> ScalingConfig:
    from trainables.config import apply_overrides, read_preset

    path, raw = read_preset(path, "scaling config", kind="search")
    try:
        return ScalingConfig.model_validate(apply_overrides(raw, list(overrides)))
    except ValidationError as exc:
        raise XstiltsError(_first_error(exc, str(path))) from None


def _search_cfg(cfg: ScalingConfig, model: ModelSpec):
    from search.config import load_search_config
    from trainables.config import update

    base = load_search_config(cfg.search, list(cfg.overrides))
    candidates = sorted({t for c in cfg.configurations for t in c}) or list(base.candidates)
    weights = [w for c in cfg.configurations for w in c.values()] or [1.0]
    return update(base, {
        "name": f"{cfg.name}-{model.label}", "num_samples": len(cfg.configurations), "repeats": cfg.seeds,
        "candidates": candidates, "weight": {"low": min(weights), "high": max(weights)},
        "points_to_evaluate": list(cfg.configurations), "scheduler": {"enabled": False},
        "max_concurrent_trials": min(base.max_concurrent_trials, len(cfg.configurations)),
        "overrides": list(base.overrides) + list(model.overrides), **model.search}, f"scaling model {model.label}")


def _params(scfg, model: ModelSpec) -> float:
    if model.params:
        return model.params
    from search.tuner import base_config
    from trainables.model import load_encoder
    from trainables.pipeline import base_model, ensure_toy_data

    pcfg = base_config(scfg)
    if pcfg.model.name != "toy":
        raise XstiltsError(f"model {model.label}: give `params` (its parameter count) in the scaling config")
    ensure_toy_data(pcfg)
    path = base_model(pcfg, Path(pcfg.data_dir), lambda *a: None)
    return float(sum(p.numel() for p in load_encoder(path).parameters()))


def _per_seed(info: dict) -> dict[str, dict[int, float]]:
    """label -> seed -> validation average, from the trials' MLflow runs."""
    from search.report import label_of
    from search.summary import trial_runs
    from trainables import names

    out: dict[str, dict[int, float]] = {}
    for run in trial_runs(info["tracking_uri"], info["experiment"], info["parent_run_id"]).values():
        out[label_of(run.mixture())] = names.seed_values(run.metrics, names.average("validation"))
    return out


def gain_stats(config: dict[int, float], baseline: dict[int, float]) -> dict:
    diffs = np.array([config[s] - baseline[s] for s in sorted(set(config) & set(baseline))])
    n = len(diffs)
    mean = float(diffs.mean()) if n else float("nan")
    half = T95.get(n - 1, 1.96) * float(diffs.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    return {"gain": mean, "low": mean - half, "high": mean + half, "n": n}


def run_scaling(cfg: ScalingConfig, address: str | None = None, console=None) -> dict:
    from rich.console import Console

    from search.plots import scaling_plot
    from search.run import run_search
    from search.tuner import search_dir

    console = console or Console()
    points, per_model = [], []
    for model in cfg.models:
        scfg = _search_cfg(cfg, model)
        params = _params(scfg, model)
        console.print(f"[bold]{model.label}[/bold]: {params:,.0f} parameters")
        run_search(scfg, address=address, console=console)
        info = json.loads((search_dir(scfg) / "search.json").read_text())
        from search.summary import unmasked

        info["tracking_uri"] = unmasked(info["tracking_uri"], scfg.tracking_uri, "MLFLOW_TRACKING_URI")
        seeds = _per_seed(info)
        if "baseline" not in seeds:
            raise XstiltsError(f"{model.label}: the baseline ({{}}) must be one of the configurations")
        row = {"model": model.label, "params": params,
               "baseline": float(np.mean(list(seeds["baseline"].values()))), "gains": {}}
        for label, values in seeds.items():
            if label != "baseline":
                row["gains"][label] = gain_stats(values, seeds["baseline"])
                points.append({"label": label, "model": model.label, "params": params, **row["gains"][label]})
        per_model.append(row)
    trend = {}
    for label in sorted({p["label"] for p in points}):
        ps = [p for p in points if p["label"] == label]
        if len(ps) >= 2:
            slope = float(np.polyfit(np.log10([p["params"] for p in ps]), [p["gain"] for p in ps], 1)[0])
            trend[label] = {"slope_per_decade": slope, "diminishing": slope < 0}
    root = search_dir(_search_cfg(cfg, cfg.models[0])).parent / cfg.name
    root.mkdir(parents=True, exist_ok=True)
    result = {"name": cfg.name, "models": per_model, "trend": trend,
              "plot": str(scaling_plot(points, root / "scaling.png"))}
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
    for label, t in result["trend"].items():
        verdict = "diminishing returns" if t["diminishing"] else "no diminishing returns"
        lines.append(f"- {label}: gain changes by {t['slope_per_decade']:+.2f} points per 10x parameters: {verdict}.")
    return "\n".join(lines) + "\n"
