"""Mixtures chosen on a small model, confirmed on the large one: a search with `proxy:` (search/config.py).

  xstilts search proxy_toy                  (toy: search on a 2-layer toy model, confirm on the 3-layer one)

Stage 1, `<name>-proxy`: the search as configured, on the proxy model (`proxy.model` / `proxy.overrides`, and
`proxy.search` settings for this stage). Stage 2, `<name>`: the baseline and the proxy's `top_k` best distinct
mixtures (finished trials, by validation average) on the search's own model, at its preset's learning rates and
phase-2 length — a learning rate found on a small model is not one for a large model (RegMix and DoReMi carry
mixture weights across sizes, not learning rates) —, every target, no early stopping. The summary (`proxy` in
summary.json) ranks the carried-over configurations on both models, with Spearman's rank correlation of the two
rankings: whether the proxy's ranking holds is measured by every such search, not assumed. The cost of both
stages is in each stage's trials' `cost/*_hours`. `--resume` continues whichever stage a crash interrupted.
"""

from __future__ import annotations

from pathlib import Path

from search.config import SearchConfig
from search.space import TrialSpec
from search.summary import mixture_label
from trainables.config import update


def proxy_stage(cfg: SearchConfig) -> SearchConfig:
    """The search as configured, on the proxy model."""
    p = cfg.proxy
    overrides = list(cfg.overrides) + ([f"model.name={p.model}"] if p.model else []) + list(p.overrides)
    return update(cfg, {"name": f"{cfg.name}-proxy", "proxy": None, "overrides": overrides, **p.search},
                  "proxy.search")


def picks(cfg: SearchConfig, summary: dict) -> list[dict[str, float]]:
    """The proxy's `top_k` best distinct non-empty mixtures (raw weights) among its finished trials."""
    done = sorted((t for t in summary["trials"] if t["state"] == "COMPLETE" and t["average"] is not None),
                  key=lambda t: (-t["average"], t["number"]))
    out: list[dict[str, float]] = []
    for t in done:
        weights = dict(TrialSpec.from_params(t["params"], cfg.candidates).mixture)
        if weights and weights not in out:
            out.append(weights)
        if len(out) == cfg.proxy.top_k:
            break
    return out


def confirm_stage(cfg: SearchConfig, mixtures: list[dict[str, float]]) -> SearchConfig:
    """The baseline and the carried-over mixtures on the search's own model, at its preset's settings."""
    points = [{}] + mixtures
    return update(cfg, {"proxy": None, "num_samples": len(points), "points_to_evaluate": points,
                        "intermediate_lr": None, "target_lr": None, "temperature": None, "steps": None,
                        "scheduler": {"enabled": False}}, "proxy confirmation")


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation (ties averaged); None below three pairs."""
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:  # one side constant: no ranking to correlate
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(a, b).statistic
    return None if rho != rho else float(rho)  # NaN: one side constant


def rankings(cfg: SearchConfig, proxy_summary: dict, summary: dict, mixtures: list[dict[str, float]]) -> dict:
    """Both models' validation averages of each carried-over configuration (the confirmation's seeded points,
    found by their mixture: a crash's retry runs one under a new number), their ranks and the rank correlation."""
    def proxy_score(weights: dict) -> float | None:
        scores = [t["average"] for t in proxy_summary["trials"] if t["average"] is not None
                  and dict(TrialSpec.from_params(t["params"], cfg.candidates).mixture) == weights]
        return max(scores) if scores else None

    def confirmed(weights: dict) -> dict:
        runs = [t for t in summary["trials"] if t.get("seeded", True) and t["state"] != "FAIL"
                and dict(TrialSpec.from_params(t["params"], cfg.candidates).mixture) == weights]
        return runs[-1] if runs else {}

    rows = []
    for weights in [{}] + mixtures:
        t = confirmed(weights)
        rows.append({"mixture": weights, "label": mixture_label(weights), "proxy_average": proxy_score(weights),
                     "average": t.get("average"), "test_average": t.get("test_average")})
    both = [r for r in rows if r["proxy_average"] is not None and r["average"] is not None]
    best_proxy = max(both, key=lambda r: r["proxy_average"]) if both else None
    best_here = max(both, key=lambda r: r["average"]) if both else None
    return {"search": proxy_summary["name"], "top_k": cfg.proxy.top_k, "configurations": rows,
            "spearman": spearman([r["proxy_average"] for r in both], [r["average"] for r in both]),
            "regret": (best_here["average"] - best_proxy["average"]) if both else None}


def run_proxy_search(cfg: SearchConfig, resume: bool, address: str | None, json_path: str | None, console) -> dict:
    """Both stages (module docstring); returns the confirmation's summary with `proxy` added."""
    from search.run import _write, run_search
    from search.tuner import search_dir

    def stage_resume(stage: SearchConfig) -> bool:  # a crash between stages leaves the second not begun
        return resume and (search_dir(stage) / "search.json").exists()

    first = proxy_stage(cfg)
    console.print(f"[bold]proxy stage[/bold]: search {first.name!r} on the proxy model")
    proxy_summary = run_search(first, stage_resume(first), address, None, console)
    mixtures = picks(cfg, proxy_summary)
    second = confirm_stage(cfg, mixtures)
    console.print(f"[bold]confirmation[/bold]: the baseline and {len(mixtures)} mixtures on the search's model: "
                  + "; ".join(mixture_label(m) for m in mixtures))
    summary = run_search(second, stage_resume(second), address, None, console)
    summary["proxy"] = rankings(cfg, proxy_summary, summary, mixtures)
    _write(search_dir(second) / "summary.json", summary)
    if json_path:
        _write(Path(json_path), summary)
    rho, regret = summary["proxy"]["spearman"], summary["proxy"]["regret"]
    console.print(f"proxy ranking against this model's: Spearman {'n/a' if rho is None else f'{rho:+.2f}'} over "
                  f"{len(summary['proxy']['configurations'])} configurations; the proxy's pick is "
                  f"{'n/a' if regret is None else f'{regret:.2f}'} points below the best of them here")
    return summary
