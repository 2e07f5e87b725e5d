"""Report plots (PNG, matplotlib's Agg backend; no display needed).

  history.png        optimisation history: each trial's objective, pruned trials hollow, best so far
  weights.png        mixture probability of each candidate task against the trial's score
  gain_heatmap.png   intermediate configuration x target gain over the baseline (the paper's grid)
  parallel.png       parallel coordinates: each trial's mixture probabilities and its score, coloured by score
  tradeoff.png       score against cost (GPU- or CPU-hours) per trial, the Pareto front drawn
  importance.png     fANOVA importance of each task's probability, per target
  scaling.png        gain against base-model size, mean and 95 % interval over seeds
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def history_plot(summary: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    done = [(t["number"], t["average"]) for t in summary["trials"] if t["average"] is not None]
    pruned = [t["number"] for t in summary["trials"] if t["state"] == "PRUNED"]
    if done:
        xs, ys = zip(*sorted(done))
        ax.scatter(xs, ys, color="tab:blue", label="complete", zorder=3)
        ax.step(xs, np.maximum.accumulate(ys), where="post", color="tab:orange", label="best so far")
    for n in pruned:
        ax.axvline(n, color="0.85", lw=1, zorder=1)
    ax.set_xlabel("trial")
    ax.set_ylabel("validation objective (average)")
    ax.set_title(f"{summary['name']}: optimisation history ({len(pruned)} pruned, grey)")
    ax.legend(loc="lower right")
    return _save(fig, path)


def weight_plot(trials: list[dict], path: Path, score_name: str = "average") -> Path:
    tasks = sorted({t for tr in trials for t in tr["mixture"]}) or ["(none)"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3 * len(tasks), 3), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        ax.scatter([tr["mixture"].get(task, 0.0) for tr in trials], [tr["average"] for tr in trials], alpha=0.8)
        ax.set_xlabel(f"p({task})")
        ax.set_xlim(-0.05, 1.05)
    axes[0][0].set_ylabel(score_name)
    fig.suptitle("mixture probability vs score")
    return _save(fig, path)


def gain_heatmap(report: dict, path: Path) -> Path:
    rows = [r for r in report["rows"] if r["label"] != "baseline"] or report["rows"]
    targets = report["targets"]
    grid = np.array([[r["delta"].get(x, 0.0) for x in targets] for r in rows])
    fig, ax = plt.subplots(figsize=(1.1 * len(targets) + 3, 0.5 * len(rows) + 1.8))
    lim = max(1.0, float(np.abs(grid).max()))
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(targets)), targets, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [r["label"][:28] for r in rows])
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:+.1f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(grid[i, j]) > lim / 2 else "black")
    fig.colorbar(im, ax=ax, label="gain over baseline (points)")
    ax.set_title("intermediate x target gain")
    return _save(fig, path)


def parallel_plot(trials: list[dict], path: Path, score_name: str = "average") -> Path:
    tasks = sorted({t for tr in trials for t in tr["mixture"]})
    axes_names = [f"p({t})" for t in tasks] + [score_name]
    scores = np.array([tr["average"] for tr in trials], dtype=float)
    lo, hi = (scores.min(), scores.max()) if len(scores) else (0.0, 1.0)
    span = (hi - lo) or 1.0
    fig, ax = plt.subplots(figsize=(1.6 * len(axes_names) + 2, 3.6))
    cmap = plt.get_cmap("viridis")
    for tr, score in sorted(zip(trials, scores), key=lambda x: x[1]):
        ys = [tr["mixture"].get(t, 0.0) for t in tasks] + [(score - lo) / span]
        ax.plot(range(len(axes_names)), ys, color=cmap((score - lo) / span), alpha=0.8, marker="o", ms=3)
    for i in range(len(axes_names)):
        ax.axvline(i, color="0.6", lw=0.8)
    ax.set_xticks(range(len(axes_names)), axes_names, rotation=30, ha="right")
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel(f"probability; last axis: {score_name} {lo:.1f}..{hi:.1f}")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    fig.colorbar(sm, ax=ax, label=score_name)
    ax.set_title("mixtures and their scores (parallel coordinates)")
    return _save(fig, path)


def tradeoff_plot(trials: list[dict], pareto: dict, path: Path, score_name: str = "average") -> Path:
    key = pareto["cost"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.scatter([t[key] for t in trials], [t["average"] for t in trials], alpha=0.7, label="trial")
    front = pareto["front"]
    ax.step([p[key] for p in front], [p["average"] for p in front], where="post", color="tab:red",
            label="Pareto front")
    ax.set_xlabel(key.replace("_", "-"))
    ax.set_ylabel(score_name)
    ax.legend(loc="lower right")
    ax.set_title("score against cost")
    return _save(fig, path)


def importance_plot(importance: dict, path: Path) -> Path:
    targets = list(importance)
    tasks = sorted({t for shares in importance.values() for t in shares})
    grid = np.array([[importance[x].get(t, 0.0) for t in tasks] for x in targets])
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 3, 0.45 * len(targets) + 1.8))
    im = ax.imshow(grid, cmap="Greens", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(tasks)), [f"p({t})" for t in tasks], rotation=30, ha="right")
    ax.set_yticks(range(len(targets)), targets)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="fANOVA importance")
    ax.set_title("which task's weight matters, per target")
    return _save(fig, path)


def scaling_plot(points: list[dict], path: Path) -> Path:
    """points: [{"model", "params", "gain", "low", "high"}] per (model, configuration)."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label in sorted({p["label"] for p in points}):
        ps = sorted((p for p in points if p["label"] == label), key=lambda p: p["params"])
        xs = [p["params"] for p in ps]
        ys = [p["gain"] for p in ps]
        err = [[p["gain"] - p["low"] for p in ps], [p["high"] - p["gain"] for p in ps]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
    ax.axhline(0, color="0.6", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("base-model parameters")
    ax.set_ylabel("gain over own baseline (points)")
    ax.set_title("does the intermediate-task gain shrink with scale?")
    ax.legend(fontsize=8)
    return _save(fig, path)
