"""Benchmark: does a mixture chosen on a small model hold on a larger one, and for what share of the cost?

Two recorded grids of the same configurations (benchmarks/search_efficiency.py's grid: every subset of the toy
candidates at equal weights x 2 learning rates, plus the baseline), each point run exactly as a trial of the toy
search runs it, on two toy model sizes:

  small  benchmarks/records/proxy_small.json   2 layers x 64 wide (configs/search/proxy_toy.yaml's proxy)
  large  benchmarks/records/proxy_large.json   3 layers x 128 wide (the toy preset's model)

Replay, per seed: TPE + ASHA (Optuna's sampler, ASHA via `search.asha.SeededASHA`, driven by the recorded
rung values, as benchmarks/search_efficiency.py replays) runs `--proxy-trials` trials on the small grid; its
`--top-k` best distinct finished mixtures and the baseline then run in full on the large grid at the toy
preset's intermediate learning rate (3e-4, one of the grid's two), as `xstilts search proxy_toy` confirms them
(a learning rate found on a small model is not carried to a large one); the pick is the best of those on the
large grid, the baseline included.

  regret      the large grid's best validation objective minus that of the pick (points)
  cost_ratio  (small-stage cost + confirmation cost) / the median cost of TPE + ASHA run directly on the large
              grid until a trial finishes within 0.5 point of its best (search_efficiency's measure)
  spearman    rank correlation of the 31 configurations' final objectives on the two sizes

Output (`--json FILE`): {"spearman", "regret", "cost_ratio", "seeds", ...}: medians over seeds, plus a sweep over
proxy trials and k. Goal (issue 23): regret <= 0.5 point at <= 0.3x the cost.

Run:  python benchmarks/proxy_transfer.py [--seeds 50] [--json out.json]
      python benchmarks/proxy_transfer.py --record [--data-dir toy_data]   (both grids: ~20 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import search_efficiency as SE  # noqa: E402  (the grid, its recorder and the replay)

RECORDS = {"small": ROOT / "benchmarks" / "records" / "proxy_small.json",
           "large": ROOT / "benchmarks" / "records" / "proxy_large.json"}
SIZES = {"small": {"hidden_size": 64, "layers": 2, "heads": 2, "mlm_steps": 2000}, "large": None}  # None: preset's


def finals(table: SE.Table) -> dict[tuple, float]:
    return {table.key(c["mixture"], c["intermediate_lr"]): c["final"] for c in table.configs}


def spearman(small: SE.Table, large: SE.Table) -> float | None:
    """Rank correlation of the configurations' final objectives on the two sizes (the proxy search's measure)."""
    from search.proxy import spearman as rank_correlation

    a, b = finals(small), finals(large)
    return rank_correlation([a[k] for k in sorted(a)], [b[k] for k in sorted(a)])


def explore(table: SE.Table, sampler, n_trials: int) -> tuple[list[tuple], float]:
    """TPE + ASHA (grace period 1 rung, reduction factor 2) for `n_trials` trials on `table`: (the finished
    configurations' keys, best final first; the cost paid)."""
    done: dict[tuple, float] = {}
    cost = 0.0
    for config, finished, cost in SE.trials(table, sampler, 1, n_trials):
        if finished:
            done[table.key(config["mixture"], config["intermediate_lr"])] = config["final"]
    return sorted(done, key=lambda k: -done[k]), cost


def preset_lr() -> float:
    """The toy preset's intermediate learning rate: what the confirmation stage trains at."""
    from trainables.config import load_config

    return load_config("toy").intermediate.lr


def proxy_once(small: SE.Table, large: SE.Table, seed: int, trials: int, top_k: int, lr: float) -> dict:
    """One seed of the proxy procedure: regret and cost (seconds of the recorded grids)."""
    from search.tuner import tpe_sampler

    ranked, cost = explore(small, tpe_sampler(seed, len(small.configs)), trials)
    mixtures = list(dict.fromkeys(k[0] for k in ranked if k[0]))[:top_k]  # distinct non-empty mixtures, best first
    confirm = [(m, lr) for m in mixtures] + [k for k in large.index if not k[0]]  # at the preset's lr; + baseline
    by_key = {large.key(c["mixture"], c["intermediate_lr"]): c for c in large.configs}
    cost += sum(by_key[k]["elapsed_s"][-1] for k in confirm)
    pick = max(confirm, key=lambda k: by_key[k]["final"])
    return {"regret": large.best - by_key[pick]["final"], "cost": cost, "pick": pick}


def direct_cost(large: SE.Table, seeds: int) -> float | None:
    """Median cost of TPE + ASHA on the large grid until a trial finishes within 0.5 point of its best."""
    costs = []
    for seed in range(seeds):
        sampler, asha = SE.strategies(seed, len(large.configs))["tpe_asha"]
        cost, _, _ = SE.replay(large, sampler, asha, 4 * len(large.configs))
        costs.append(math.inf if cost is None else cost)
    median = statistics.median(costs)
    return None if median == math.inf else median


def run(small_data: dict, large_data: dict, seeds: int, trials: int = 12, top_k: int = 3,
        lr: float | None = None) -> dict:
    """The replay (module docstring); `lr`: the confirmation's learning rate (default: the toy preset's)."""
    small, large = SE.Table(small_data), SE.Table(large_data)
    assert set(finals(small)) == set(finals(large)), "the two records must hold the same configurations"
    lr = preset_lr() if lr is None else lr
    assert float(lr) in large.lrs, f"the grid's learning rates {large.lrs} lack the preset's {lr}"
    direct = direct_cost(large, seeds)

    def summary(n_trials: int, k: int) -> dict:
        runs = [proxy_once(small, large, seed, n_trials, k, lr) for seed in range(seeds)]
        cost = statistics.median(r["cost"] for r in runs)
        return {"proxy_trials": n_trials, "top_k": k, "regret": statistics.median(r["regret"] for r in runs),
                "p90_regret": sorted(r["regret"] for r in runs)[math.ceil(0.9 * seeds) - 1],
                "within_0.5": sum(r["regret"] <= SE.WITHIN for r in runs), "median_cost_s": cost,
                "cost_ratio": None if not direct else cost / direct}

    main = summary(trials, top_k)
    best_large = max(large.configs, key=lambda c: c["final"])
    best_small = max(small.configs, key=lambda c: c["final"])
    return {"spearman": spearman(small, large), "regret": main["regret"], "cost_ratio": main["cost_ratio"],
            "seeds": seeds, "proxy_trials": trials, "top_k": top_k, "p90_regret": main["p90_regret"],
            "within_0.5": main["within_0.5"], "median_proxy_cost_s": main["median_cost_s"],
            "median_direct_cost_s": direct,
            "grid_cost_s": {"small": small.grid_cost, "large": large.grid_cost},
            "best": {"large": [best_large["mixture"], best_large["intermediate_lr"], best_large["final"]],
                     "small": [best_small["mixture"], best_small["intermediate_lr"], best_small["final"]]},
            "baseline": {"large": next(c["final"] for c in large.configs if not c["mixture"]),
                         "small": next(c["final"] for c in small.configs if not c["mixture"])},
            "sweep": [summary(n, k) for n in (6, 12, 18) for k in (1, 3)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--record", action="store_true", help="record both grids first (slow)")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "toy_data")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--proxy-trials", type=int, default=12)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.record:
        for size, path in RECORDS.items():
            SE.record(args.data_dir.resolve(), path, model=SIZES[size])
    data = {size: json.loads(path.read_text()) for size, path in RECORDS.items()}
    out = run(data["small"], data["large"], args.seeds, args.proxy_trials, args.top_k)
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    print(f"grids: small {out['grid_cost_s']['small']:.0f} s, large {out['grid_cost_s']['large']:.0f} s; "
          f"Spearman of the 31 configurations across sizes {out['spearman']:+.2f}")
    print(f"best large {out['best']['large']}, best small {out['best']['small']}; baselines {out['baseline']}")
    print(f"{'proxy trials':>12s} {'k':>3s} {'regret':>7s} {'p90':>6s} {'<=0.5':>6s} {'cost (s)':>9s} {'ratio':>6s}")
    for r in out["sweep"]:
        print(f"{r['proxy_trials']:12d} {r['top_k']:3d} {r['regret']:7.2f} {r['p90_regret']:6.2f} "
              f"{r['within_0.5']:3d}/{args.seeds:<2d} {r['median_cost_s']:9.0f} {fmt(r['cost_ratio']):>6s}")
    print(f"direct TPE + ASHA on the large grid: median {fmt(out['median_direct_cost_s'])} s")
    print(json.dumps({k: out[k] for k in ("spearman", "regret", "cost_ratio", "seeds")}))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
