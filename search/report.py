"""`xstilts report SEARCH`: the paper-style table of a finished search, plots, and cost.

Rows: the baseline, each single intermediate task, then multi-task and searched mixtures (the best trial
per distinct mixture). Columns: each target's score and the average (called XTREME only when all nine
targets are scored on every language XTREME lists, on whole test sets: the trials logged an XTREME score). Deltas are points against the baseline. "Best model per target" picks, per target, the
row that scores best on it and averages those scores, as the paper computes its +5.4. Scores come from the trials' logged MLflow metrics (validation by default;
`--split test` for the test split, scored but never selected on: the best trial per mixture and the best model
per target are always chosen on validation — a target without a validation split by the validation average — and
then reported with their test scores; when the trials left test work to the search's finalists, the test
tables cover the finalists, and say so). Outputs go to `<search>/report/`
(report.md, report.csv, report.json, PNGs) and to the search's parent MLflow run.

  xstilts report configs/search/toy.yaml          (or a search folder: runs/searches/toy)
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from search.finalists import TAG as FINALIST
from search.summary import score_name, trial_runs
from trainables import names
from trainables.errors import XstiltsError
from trainables.tasks import CATEGORIES, TARGETS, TASKS
from trainables.tracking import MlflowTracker


def _trial_rows(runs: list, split: str) -> list[dict]:
    """One entry per trial with scores on this split: mixture, per-target scores, average, cost."""
    out = []
    for run in runs:
        m = run.metrics
        targets = names.target_scores(m, split)
        if names.average(split) not in m or not targets:
            continue
        out.append({"trial": run.tags.get("optuna.trial"), "run_id": run.run_id, "mixture": run.mixture(),
                    "targets": targets, "average": m[names.average(split)],
                    # what every choice in the report is made on: validation, whatever split is reported
                    "selection": {"average": m.get(names.average("validation")),
                                  "targets": names.target_scores(m, "validation")},
                    "cpu_hours": m.get("cost/cpu_hours", 0.0), "gpu_hours": m.get("cost/gpu_hours", 0.0),
                    # logged only when the trial's number is what XTREME prints (trainables.metrics.xtreme_score)
                    "xtreme": m.get(names.xtreme(split))})
    return out


def _chosen_on(trial: dict, target: str | None = None) -> float:
    """What a choice between trials is made on: the target's validation score (its validation average when the
    target has no validation split: XQuAD, TyDiQA, Tatoeba), else the validation average; never a test score."""
    selection = trial.get("selection") or {"average": trial["average"], "targets": trial["targets"]}
    value = selection["targets"].get(target) if target else None
    value = selection["average"] if value is None else value
    return float("-inf") if value is None else value


def _cost(runs: list) -> dict:
    """Accelerator-hours (CPU-hours locally) of every trial of the search, pruned ones included."""
    return {"trials": len(runs), "cpu_hours": sum(r.metrics.get("cost/cpu_hours", 0.0) for r in runs),
            "gpu_hours": sum(r.metrics.get("cost/gpu_hours", 0.0) for r in runs)}


def label_of(mixture: dict) -> str:
    if not mixture:
        return "baseline"
    if len(mixture) == 1:
        return next(iter(mixture))
    return " + ".join(f"{t} {p:.2f}" for t, p in sorted(mixture.items(), key=lambda kv: -kv[1]))


def finished(trials: list[dict]) -> list[dict]:
    """Trials scored on every target (a pruned trial's XTREME averages fewer targets: not comparable)."""
    full = set(max((x["targets"] for x in trials), key=len)) if trials else set()
    return [t for t in trials if set(t["targets"]) >= full]


def build_rows(trials: list[dict]) -> dict:
    complete = finished(trials)
    best: dict[str, dict] = {}
    for t in complete:  # the best trial per distinct mixture (e.g. over learning rates), chosen on validation
        key = label_of(t["mixture"])
        if key not in best or _chosen_on(t) > _chosen_on(best[key]):
            best[key] = t
    order = sorted(best, key=lambda k: (k != "baseline", len(best[k]["mixture"]) != 1, -_chosen_on(best[k])))
    base = best.get("baseline")
    rows = []
    for key in order:
        t = best[key]
        delta = {x: v - base["targets"][x] for x, v in t["targets"].items() if base and x in base["targets"]}
        if base:
            delta["average"] = t["average"] - base["average"]
        nine = len(t["targets"]) == len(TARGETS) and t.get("xtreme") is not None  # and every language, whole sets
        rows.append({"label": key, "mixture": t["mixture"], "targets": t["targets"], "average": t["average"],
                     "xtreme": t["average"] if nine else None, "delta": delta, "trial": t["trial"],
                     "mlflow_run_id": t["run_id"], "gpu_hours": t["gpu_hours"], "cpu_hours": t["cpu_hours"],
                     "selection": t.get("selection")})
    targets = [x for x in TARGETS if rows and x in rows[0]["targets"]]
    # the best model per target is chosen on validation; its score on the reported split is what is averaged
    chosen = {x: max(rows, key=lambda r: _chosen_on(r, x)) for x in targets}
    best_per_target = {x: r["label"] for x, r in chosen.items()}
    per_target_scores = [chosen[x]["targets"][x] for x in targets]
    per_target_average = sum(per_target_scores) / len(per_target_scores) if targets else None
    xtreme = bool(rows) and all(r["xtreme"] is not None for r in rows)  # every row is a number XTREME prints
    return {"rows": rows, "targets": targets, "score_name": score_name(len(targets), xtreme),
            "best_per_target": best_per_target, "best_per_target_average": per_target_average,
            "best_per_target_xtreme": per_target_average if xtreme and len(targets) == len(TARGETS) else None,
            "baseline_average": base["average"] if base else None}


def markdown(report: dict) -> str:
    targets = report["targets"]
    lines = ["| configuration | " + " | ".join(targets) + f" | {report['score_name']} |",
             "|---|" + "---:|" * (len(targets) + 1)]
    for r in report["rows"]:
        cells = [f"{r['targets'][x]:.1f}" + (f" ({r['delta'][x]:+.1f})" if r["label"] != "baseline" and x in r["delta"] else "")
                 for x in targets]
        avg = f"{r['average']:.2f}" + (f" ({r['delta']['average']:+.2f})" if "average" in r["delta"] and r["label"] != "baseline" else "")
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {avg} |")
    if report["best_per_target_average"] is not None:
        per = ", ".join(f"{x}: {lab}" for x, lab in report["best_per_target"].items())
        gain = ("" if report["baseline_average"] is None
                else f" ({report['best_per_target_average'] - report['baseline_average']:+.2f} vs baseline)")
        lines += ["", f"Best model per target: {report['score_name']} {report['best_per_target_average']:.2f}{gain} — {per}"]
    lines += ["", objective_line(report["targets"], report["split"], report["score_name"])]
    if report.get("covers"):
        c = report["covers"]
        lines += ["", f"Test scores cover the search's {len(c['finalists'])} finalists (trials "
                      f"{', '.join(map(str, c['finalists']))}: the seeded points and the best by validation); the "
                      f"other {c['trials'] - len(c['finalists'])} trials left their test work to them."]
    for flag in report.get("flags", []):
        lines += ["", f"Note: {flag}"]
    if report.get("importance"):
        lines += ["", "Which task's weight matters (fANOVA share of each target's variance over the trials):", "",
                  "| target | " + " | ".join(f"p({t})" for t in _importance_tasks(report)) + " |",
                  "|---|" + "---:|" * len(_importance_tasks(report))]
        for target, shares in report["importance"].items():
            lines.append(f"| {target} | " + " | ".join(f"{shares.get(t, 0.0):.2f}" for t in _importance_tasks(report)) + " |")
    if report.get("pareto", {}).get("front"):
        unit = "GPU-h" if report["pareto"]["cost"] == "gpu_hours" else "CPU-h"
        lines += ["", "Score against cost (trials no other beats on both): " + "; ".join(
            f"{label_of(p['mixture'])} {p['average']:.2f} at {p[report['pareto']['cost']]:.3f} {unit}"
            for p in report["pareto"]["front"])]
    c = report["cost"]
    lines += ["", f"Cost: {c['gpu_hours']:.3f} GPU-hours, {c['cpu_hours']:.3f} CPU-hours over {c['trials']} trials "
                  f"(pruned ones included)."]
    plan = c.get("plan") or {}
    if plan.get("hours") is not None:
        lines.append(f"`xstilts plan` estimated {plan['hours']:.3f} {plan['unit']} ({plan['device']}) before the "
                     f"search: {plan['hours'] / max(c[plan['key']], 1e-9):.2f} x what it logged.")
    elif plan.get("unavailable"):
        lines.append(f"(no `xstilts plan` estimate: {plan['unavailable']})")
    return "\n".join(lines) + "\n"


def _importance_tasks(report: dict) -> list[str]:
    return sorted({t for shares in report["importance"].values() for t in shares})


def objective_line(targets: list[str], split: str, name: str | None = None) -> str:
    """Which targets the numbers average over, and why the others are missing (DESIGN: no selection on test)."""
    scored = ", ".join(targets)
    missing = [t for t in TARGETS if t not in targets]
    line = f"{split.capitalize()} scores: {name or score_name(len(targets))} = mean of {len(targets)} targets ({scored})."
    if name and name != "XTREME" and len(targets) == len(TARGETS):
        line += (" Not XTREME: not every language XTREME lists, or capped test sets (the trials' results.json "
                 "say which: `missing`).")
    if split == "validation" and missing:
        no_dev = [t for t in missing if not TASKS[t].has_validation]
        if no_dev:
            line += (f" {', '.join(no_dev)} have no validation split (their one labelled split is XTREME's test "
                     f"set), so the search objective leaves them out; see --split test.")
    return line


def flags(runs: list) -> list[str]:
    """Warnings a reader must see: BUCC thresholds tuned on gold pairs only (no sample corpora)."""
    origins = {r.tags.get(names.note_tag("bucc2018", "threshold_from"), "") for r in runs}
    if any("gold-only" in o for o in origins):
        return ["BUCC test F1 uses thresholds tuned on google/xtreme's gold pairs only (threshold_from: gold-only "
                "dev); mining among gold pairs is trivial, so the threshold is miscalibrated. Put BUCC's sample "
                "corpora under data_dir (xstilts tasks --json: bucc2018's local_only source says where)."]
    return []


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["label", *report["targets"], "average", *[f"delta_{x}" for x in report["targets"]], "delta_average"])
    for r in report["rows"]:
        w.writerow([r["label"], *[f"{r['targets'][x]:.4f}" for x in report["targets"]], f"{r['average']:.4f}",
                    *[f"{r['delta'].get(x, 0.0):.4f}" for x in report["targets"]], f"{r['delta'].get('average', 0.0):.4f}"])
    return buf.getvalue()


def task_importance(trials: list[dict], targets: list[str], seed: int = 0) -> dict:
    """{target (and "average"): {task: share}}: how much of the variance of each target's score over the
    finished trials the mixture probability of each task explains (Optuna's fANOVA evaluator, a random forest,
    seeded). Empty below 4 trials or when no probability varies: too few points to say anything."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    tasks = sorted({t for tr in trials for t in tr["mixture"]})
    varying = [t for t in tasks if len({tr["mixture"].get(t, 0.0) for tr in trials}) > 1]
    if len(trials) < 4 or not varying:
        return {}
    dists = {f"p({t})": FloatDistribution(0.0, 1.0) for t in varying}
    out = {}
    for target in [*targets, "average"]:
        scored = [tr for tr in trials if (tr["average"] if target == "average" else tr["targets"].get(target)) is not None]
        if len(scored) < 4:
            continue
        study = optuna.create_study(direction="maximize")
        for tr in scored:
            value = tr["average"] if target == "average" else tr["targets"][target]
            study.add_trial(optuna.trial.create_trial(params={f"p({t})": tr["mixture"].get(t, 0.0) for t in varying},
                                                      distributions=dists, value=value))
        if len({t.value for t in study.trials}) < 2:
            continue
        shares = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed), normalize=True)
        out[target] = {k[2:-1]: float(v) for k, v in shares.items()}
    return out


def pareto_front(trials: list[dict], cost_key: str) -> list[dict]:
    """Trials no other trial beats on both score (higher) and cost (lower), cheapest first."""
    front, best = [], float("-inf")
    for t in sorted(trials, key=lambda t: (t[cost_key], -t["average"])):
        if t["average"] > best:
            front.append({"trial": t["trial"], "mixture": t["mixture"], "average": t["average"], cost_key: t[cost_key]})
            best = t["average"]
    return front


def plan_estimate(info: dict, cost_key: str) -> dict:
    """What `xstilts plan` (search/price.py) estimates for this search, to set beside what its trials logged: on
    this CPU for a CPU search, on H100s for a GPU one (the GPU type is not recorded; the figure says so)."""
    from search.config import SearchConfig
    from search.price import price

    device = "cpu" if cost_key == "cpu_hours" else "h100"
    try:
        scfg = SearchConfig.model_validate(info["config"])
        result = price(scfg, 0 if device == "cpu" else 1024, device)
    except (XstiltsError, OSError, ValueError, KeyError) as exc:  # the estimate is a side note: never the report's end
        return {"unavailable": str(exc).splitlines()[0][:200]}
    return {"hours": result["gpu_hours"], "unit": result["unit"], "device": device, "key": cost_key,
            "wall_hours": result["wall_hours"]}


def make_report(search_dir: Path, split: str = "validation", info: dict | None = None, log_to_mlflow: bool = True) -> dict:
    from search.plots import gain_heatmap, history_plot, importance_plot, parallel_plot, tradeoff_plot, weight_plot

    state = search_dir / "search.json"
    if info is None:
        if not state.exists():
            raise XstiltsError(f"{search_dir} holds no search (no search.json) — run `xstilts search` first")
        info = json.loads(state.read_text())
    runs = list(trial_runs(info["tracking_uri"], info["experiment"], info["parent_run_id"]).values())
    trials, cost = _trial_rows(runs, split), _cost(runs)
    if not trials:
        raise XstiltsError(f"search {search_dir.name!r} has no trial with {split} scores yet")
    report = build_rows(trials)
    report.update({"split": split, "n_trials": len(trials), "cost": cost, "flags": flags(runs),
                   "objective": {"targets": [t for t in report["targets"]],
                                 "left_out": [t for t in TARGETS if not TASKS[t].has_validation]},
                   "categories": {c: [x for x in members if x in report["targets"]] for c, members in CATEGORIES.items()}})
    finalists = sorted(int(r.tags["optuna.trial"]) for r in runs if r.tags.get(FINALIST) == "true")
    if split == "test" and finalists:  # trials left test work to the finalists (search/finalists.py)
        report["covers"] = {"finalists": finalists, "trials": len(runs)}
    done = finished(trials)
    cost_key = "gpu_hours" if any(t["gpu_hours"] for t in done) else "cpu_hours"
    cost["plan"] = plan_estimate(info, cost_key)
    report["importance"] = task_importance(done, report["targets"])
    report["pareto"] = {"cost": cost_key, "front": pareto_front(done, cost_key)}
    out = search_dir / "report"
    out.mkdir(exist_ok=True)
    summary = json.loads((search_dir / "summary.json").read_text()) if (search_dir / "summary.json").exists() else None
    plots = [history_plot(summary, out / "history.png") if summary else None,
             weight_plot(finished(trials), out / "weights.png", report["score_name"]),
             gain_heatmap(report, out / "gain_heatmap.png"),
             parallel_plot(done, out / "parallel.png", report["score_name"]),
             tradeoff_plot(done, report["pareto"], out / "tradeoff.png", report["score_name"]),
             importance_plot(report["importance"], out / "importance.png") if report["importance"] else None]
    report["plots"] = [str(p) for p in plots if p]
    (out / "report.md").write_text(markdown(report))
    (out / "report.csv").write_text(to_csv(report))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    if log_to_mlflow:
        parent = MlflowTracker(info["tracking_uri"], info["experiment"], "", run_id=info["parent_run_id"])
        for f in ["report.md", "report.csv", "report.json", *[Path(p).name for p in report["plots"]]]:
            parent.log_artifact(out / f, "report")
        parent.log_metrics({"report/best_per_target_average": report["best_per_target_average"]})
    return report
