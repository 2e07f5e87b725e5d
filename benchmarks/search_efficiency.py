"""Benchmark: what a search strategy costs to find (within 0.5 point) the best mixture of an exhaustive grid.

Two steps, the way HPO libraries compare optimisers without retraining (a tabular benchmark, as in HPOBench or
Syne Tune's simulated backend):

  --record   runs a grid once, each point exactly as a trial of the default toy search runs it (its base config
             and the point's typed spec; one thread each, two at a time; phase 1 and the tokenised features from
             the cache, as in a search; phases 2 and 3 cold), and writes each configuration's per-rung validation
             objective, the wall time at which each rung finished, its per-target scores and the LogME
             transferability of its phase-2 encoder (checked in under benchmarks/records/). Two grids (`--grid`):
               subsets  toy_grid.json: every non-empty subset of the 4 toy candidates at equal weights x lr 1e-4,
                        3e-4, plus the baseline: 31 configurations on the toy preset's model (issue 11);
               weights  toy_grid_weights.json: weights 0 / 0.5 / 1 per task over 5 candidates (+ ccg), mixtures
                        of at most 2 tasks, x lr 1e-4, 1.7e-4, 3e-4, plus the baseline: 106 configurations on the
                        small toy model (2 x 64), a harder space where weights matter (issue 23).
  (default)  replays search strategies against a record, >= 20 seeds each: random, TPE, random + ASHA, and
             TPE + ASHA (grace period 1 rung, and 4; reduction factor 2), with Optuna's own samplers and Ray's own
             ASHA (`search.asha.SeededASHA`, the scheduler the search uses) driven by the recorded rung values,
             one trial at a time, in the search's space (per task in or out, its weight when in) — except on a
             grid of mixtures of at most k tasks, which has a space of its own: k task slots with their weights
             (`Table.suggest`; `xstilts search` has no task cap). A
             trial's cost is the recorded time of the rungs it ran; a configuration seen before (the same mixture
             up to scale) costs only the rungs not yet paid for (xstilts' phase-2 and phase-3 caches make a repeat
             free). A strategy's cost on one seed: the summed cost until a trial *finishes* with a final score
             within 0.5 point of the grid's best.

Output (`--json FILE`): {"grid_cost": s, "best": {...}, "strategies": {name: {"seeds", "median_cost", "p90_cost",
"reached", "median_trials"}}, "ratios": {...}, "transfer_spearman": {...}, "effects": {"<task> @ <lr>": {target:
points vs the baseline}}} (the toy world's planted affinities, as measured). Goals: TPE + ASHA's median cost
<= 1/3 of the grid's and <= 1/2 of random search's on `subsets` (issue 11); <= 1/5 and <= 1/2 on `weights`
(issue 23).

Run:  python benchmarks/search_efficiency.py [--grid weights] [--seeds 50] [--json out.json]
      python benchmarks/search_efficiency.py --shapes [--seeds 20]     (TPE + ASHA per grace x reduction factor)
      python benchmarks/search_efficiency.py --samplers [--seeds 20]   (TPE settings under ASHA)
      python benchmarks/search_efficiency.py --record [--grid weights] [--data-dir toy_data]
                 (2 cores: subsets ~20 minutes, weights ~30)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RECORD = ROOT / "benchmarks" / "records" / "toy_grid.json"
CANDIDATES = ["mnli", "qqp", "squad_v1", "sst2"]
LRS = [1.0e-4, 3.0e-4]  # the ends of configs/search/toy.yaml's intermediate_lr range
WITHIN = 0.5
TRANSFER_TARGETS = ("xnli", "pawsx")  # the toy's sentence-classification targets (LogME needs sentence labels)
SMALL = {"hidden_size": 64, "layers": 2, "heads": 2, "mlm_steps": 2000}  # the proxy toy's model (2 x 64)
# The recorded grids. `subsets`: every non-empty subset at equal weights (issue 11's grid, the toy preset's model).
# `weights`: weights 0 / 0.5 / 1 per task over 5 candidates (ccg, whose planted target is udpos, joins), mixtures of
# at most 2 tasks (the replay's space: two task slots), x 3 learning rates: 35 mixtures x 3 + the
# baseline = 106 configurations, on the small toy model (2 x 64): recording took 27 minutes rather than ~2 hours.
GRIDS = {
    "subsets": {"record": RECORD, "candidates": CANDIDATES, "lrs": LRS, "weights": [1.0], "max_tasks": None,
                "model": None},
    "weights": {"record": ROOT / "benchmarks" / "records" / "toy_grid_weights.json",
                "candidates": CANDIDATES + ["ccg"], "lrs": [1.0e-4, 1.7e-4, 3.0e-4], "weights": [0.5, 1.0],
                "max_tasks": 2, "model": SMALL},
}


# ---------------------------------------------------------------------------------------------- recording
def mixtures(candidates: list[str], weights: list[float], max_tasks: int | None) -> list[dict]:
    """Every distinct non-empty mixture of at most `max_tasks` tasks, each in it at a weight from `weights` (the
    non-zero ones; a task not in it has weight 0); two mixtures are the same when one is a multiple of the other
    (sampling normalises weights)."""
    if not weights or min(weights) <= 0:
        raise ValueError(f"weights {weights}: give the positive weights a task may take (out is implicit)")
    seen, out = set(), []
    for k in range(1, (max_tasks or len(candidates)) + 1):
        for subset in itertools.combinations(candidates, k):
            for ws in itertools.product(weights, repeat=k):
                mixture = dict(zip(subset, ws))
                if (key := mixture_key(mixture)) not in seen:
                    seen.add(key)
                    out.append(dict(key))  # written normalised: the largest weight is 1
    return out


def mixture_key(mixture: dict) -> tuple:
    """A mixture up to scale: (task, weight / the largest weight), sorted."""
    top = max(mixture.values(), default=1.0)
    return tuple(sorted((t, round(w / top, 6)) for t, w in mixture.items()))


def grid_points(grid: str = "subsets") -> list[dict]:
    """The baseline, then every mixture of the grid at each of its learning rates."""
    g = GRIDS[grid]
    return [{"mixture": {}, "intermediate_lr": None}] + [
        {"mixture": m, "intermediate_lr": lr} for m in mixtures(g["candidates"], g["weights"], g["max_tasks"])
        for lr in g["lrs"]]


def _measure(point: dict, data_dir: str, cache: str, model: dict | None = None) -> dict:
    """One grid point, run as a trial runs it (the toy search's base config, the spec's typed update), one
    thread; the validation objective and the wall time at the end of each rung (phase 2 counts in rung 1).
    `model`: settings of the toy model to use instead of the preset's (another size)."""
    import time

    import torch

    from search.space import TrialSpec
    from trainables.pipeline import Pipeline

    torch.set_num_threads(1)  # as a Ray trial with resources={cpu: 1}
    base = _base(data_dir, cache, model)
    spec = TrialSpec(mixture=point["mixture"], intermediate_lr=point["intermediate_lr"])
    pipe_cfg = spec.pipeline_config(base)
    start = time.perf_counter()
    pipe = Pipeline(pipe_cfg, log=lambda *a: None).prepare()
    values, elapsed, targets = [], [], []
    for result in pipe.targets():
        values.append(pipe.summary("validation")["average"])
        elapsed.append(time.perf_counter() - start)
        targets.append(result.name)
    test = pipe.summary("test")
    from trainables.tasks import TASKS
    from trainables.transfer import estimate

    transfer = {t: estimate(pipe.encoder_dir, pipe.tok, TASKS[t], pipe.english_train(t), pipe_cfg)
                for t in TRANSFER_TARGETS}  # after the clock: not part of the trial's cost
    return {**point, "transfer": transfer, "targets": targets, "values": values, "elapsed_s": elapsed, "final": values[-1],
            "test_average": test["average"],
            "test_targets": {t: v["score"] for t, v in test["targets"].items()},
            "validation_targets": {t: v["score"] for t, v in pipe.summary("validation")["targets"].items()}}


def _base(data_dir: str, cache: str, model: dict | None):
    """The toy search's base pipeline config on `data_dir`/`cache`, with `model` settings if given."""
    from search.config import load_search_config
    from search.tuner import base_config
    from trainables.config import update

    return update(base_config(load_search_config("toy")),
                  {"data_dir": data_dir, "cache_dir": cache, **({"model": model} if model else {})})


def record(data_dir: Path, out: Path, workers: int = 2, model: dict | None = None, grid: str = "subsets") -> dict:
    """Run every point of `grid` (two at a time on 2 cores) from a cache holding only the toy model; `model`: toy
    model settings other than the grid's (benchmarks/proxy_transfer.py records the subsets grid at two sizes)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from trainables.config import update
    from trainables.pipeline import base_model, ensure_toy_data

    g = GRIDS[grid]
    model = model or g["model"]
    shared = ROOT / ".xstilts" / "cache"
    base = _base(str(data_dir), str(shared), model)
    ensure_toy_data(base)
    base_model(base, data_dir)  # phase 1 once (cached): not what a strategy pays for
    work = Path(tempfile.mkdtemp(prefix="xstilts-grid-"))
    cache = work / "cache"
    for toy in shared.glob("toy-model-*"):
        shutil.copytree(toy, cache / toy.name)
    # Tokenised features are shared by every trial of a search (one cache): build them once, untimed, with a
    # one-step phase 2 on all candidates; then drop its phase-2 and phase-3 entries so the grid starts cold.
    from search.space import TrialSpec
    from trainables.pipeline import Pipeline

    warm = update(TrialSpec(mixture={t: 1.0 for t in g["candidates"]}).pipeline_config(base),
                  {"cache_dir": str(cache), "intermediate": {"steps": 1}})
    for _ in Pipeline(warm, log=lambda *a: None).targets():
        pass
    for entry in [*cache.glob("phase2-*"), *cache.glob("phase3-*")]:
        shutil.rmtree(entry)
    points = grid_points(grid)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        configs = list(pool.map(_measure, points, [str(data_dir)] * len(points), [str(cache)] * len(points),
                                [model] * len(points)))
    toy = (ROOT / "configs" / "search" / "toy.yaml").read_text()
    data = {"settings": {"grid": grid, "candidates": g["candidates"], "lrs": g["lrs"], "weights": g["weights"],
                         "max_tasks": g["max_tasks"], "search": "configs/search/toy.yaml",
                         "overrides": [line for line in toy.splitlines() if line.startswith("overrides:")][0][11:],
                         "workers": workers, "threads_per_worker": 1, "model": base.model.model_dump(),
                         "note": "values: validation objective after each rung; elapsed_s: wall seconds since the "
                                 "trial started, at the end of each rung (phase 2 inside the first)"},
            "configs": configs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return data


# ---------------------------------------------------------------------------------------------- replay
class Table:
    """The record as a lookup: Optuna parameters -> configuration, and the search space over the grid."""

    def __init__(self, data: dict):
        self.configs = data["configs"]
        self.candidates = data["settings"]["candidates"]
        self.lrs = data["settings"]["lrs"]
        self.weights = data["settings"].get("weights", [1.0])  # the non-zero weights a task may take
        self.max_tasks = data["settings"].get("max_tasks")
        self.index = {self.key(c["mixture"], c["intermediate_lr"]): i for i, c in enumerate(self.configs)}
        self.best = max(c["final"] for c in self.configs)
        self.grid_cost = sum(c["elapsed_s"][-1] for c in self.configs)
        self.n_rungs = len(self.configs[0]["values"])

    def key(self, mixture: dict, lr) -> tuple:
        return (mixture_key(mixture), None if not mixture else float(lr))

    def suggest(self, trial) -> int:
        """The search's space over the grid. Without a task cap, `search.space.define_space`'s: per task in or
        out (`use_<task>`), and its weight when in and the grid has several (`w_<task>`). With `max_tasks` k: k
        slots, each a task or none (`task_<i>`) with its weight (`w_<i>`); a task in two slots counts once, at the
        larger weight. Slots keep every point on the grid and every candidate equally likely whatever their
        order (a cap applied while tasks are drawn in order would favour the first candidates; rejecting points
        with too many tasks stalls TPE, which learns nothing from them)."""
        chosen: dict[str, float] = {}
        pick = (lambda name: trial.suggest_categorical(name, self.weights)) if len(self.weights) > 1 else (
            lambda name: self.weights[0])
        if self.max_tasks is None:
            for t in self.candidates:
                if trial.suggest_categorical(f"use_{t}", [True, False]):
                    chosen[t] = pick(f"w_{t}")
        else:
            for slot in range(1, self.max_tasks + 1):
                t = trial.suggest_categorical(f"task_{slot}", [*self.candidates, "none"])
                if t != "none":
                    chosen[t] = max(chosen.get(t, 0.0), pick(f"w_{slot}"))
        lr = trial.suggest_categorical("intermediate_lr", self.lrs)
        return self.index[self.key(chosen, lr)]


def trials(table: Table, sampler, asha: int, max_trials: int, rf: int = 2):
    """Run up to `max_trials` trials of a strategy on the record; yield after each (its configuration, whether it
    finished — ASHA did not stop it —, the total cost so far). `asha`: the grace period in rungs (0: no ASHA)."""
    import optuna
    from types import SimpleNamespace

    from search.trainable import METRIC
    from search.asha import SeededASHA

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    sched = SeededASHA(time_attr="training_iteration", metric=METRIC, mode="max", max_t=table.n_rungs,
                       grace_period=asha, reduction_factor=rf) if asha else None
    paid: dict[int, float] = {}
    cost = 0.0
    for n in range(max_trials):
        trial = study.ask()
        i = table.suggest(trial)
        config = table.configs[i]
        ray_trial = SimpleNamespace(trial_id=f"t{n}", config={"optuna_trial": trial.number})
        if sched:
            sched.on_trial_add(None, ray_trial)
        stopped = False
        for rung, value in enumerate(config["values"], start=1):
            cost += max(0.0, config["elapsed_s"][rung - 1] - paid.get(i, 0.0))
            paid[i] = max(paid.get(i, 0.0), config["elapsed_s"][rung - 1])
            trial.report(value, rung)
            if sched and rung < table.n_rungs:
                if sched.on_trial_result(None, ray_trial, {"training_iteration": rung, METRIC: value}) == sched.STOP:
                    stopped = True
                    break
        if stopped:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            if sched:
                sched.on_trial_complete(None, ray_trial, {"training_iteration": table.n_rungs,
                                                          METRIC: config["final"]})
            study.tell(trial, config["final"])
        yield config, not stopped, cost


def replay(table: Table, sampler, asha: int, max_trials: int, rf: int = 2) -> tuple[float | None, int, float]:
    """(cost until a finished trial is within WITHIN of the grid's best, or None if none did within
    `max_trials`; trials run; total cost spent)."""
    cost, n = 0.0, 0
    for n, (config, finished, cost) in enumerate(trials(table, sampler, asha, max_trials, rf), start=1):
        if finished and config["final"] >= table.best - WITHIN:
            return cost, n, cost
    return None, max_trials, cost


def strategies(seed: int, budget: int) -> dict:
    import optuna

    from search.tuner import tpe_sampler

    return {"random": (optuna.samplers.RandomSampler(seed=seed), 0),
            "tpe": (tpe_sampler(seed, budget), 0),
            "random_asha": (optuna.samplers.RandomSampler(seed=seed), 1),
            "tpe_asha": (tpe_sampler(seed, budget), 1),  # ASHA: grace period 1 rung, reduction factor 2
            "random_asha_grace4": (optuna.samplers.RandomSampler(seed=seed), 4),
            "tpe_asha_grace4": (tpe_sampler(seed, budget), 4)}  # the toy preset's grace period


def run(data: dict, seeds: int, budget_factor: int = 4) -> dict:
    table = Table(data)
    max_trials = budget_factor * len(table.configs)
    results: dict[str, dict] = {}
    for name in strategies(0, len(table.configs)):
        costs, counts = [], []
        for seed in range(seeds):
            sampler, asha = strategies(seed, len(table.configs))[name]
            cost, n, _ = replay(table, sampler, asha, max_trials)
            costs.append(math.inf if cost is None else cost)
            counts.append(n)
        results[name] = {**_costs(costs), "median_trials": statistics.median(counts)}
    best = max(table.configs, key=lambda c: c["final"])
    out = {"grid_cost": table.grid_cost, "n_configs": len(table.configs), "within": WITHIN,
           "best": {"mixture": best["mixture"], "intermediate_lr": best["intermediate_lr"], "final": best["final"],
                    "test_average": best.get("test_average")},
           "baseline_final": next((c["final"] for c in table.configs if not c["mixture"]), None),
           "strategies": results}
    out["transfer_spearman"] = transfer_correlation(table.configs)
    out["effects"] = planted_effects(table.configs)
    ta, rnd = results["tpe_asha"]["median_cost"], results["random"]["median_cost"]
    out["ratios"] = {"tpe_asha_vs_grid": None if ta is None else ta / table.grid_cost,
                     "tpe_asha_vs_random": None if ta is None or not rnd else ta / rnd}
    return out


def shapes(data: dict, seeds: int, budget_factor: int = 4) -> dict:
    """TPE + ASHA at each scheduler shape (grace period 1-3 rungs x reduction factor 2-3): which finds the grid's
    best cheapest (issue 20: the `mixture` preset's shape). {"grace=G rf=R": {"median_cost", "p90_cost",
    "reached"}}."""
    from search.tuner import tpe_sampler

    table = Table(data)
    out = {}
    for grace in (1, 2, 3):
        for rf in (2, 3):
            costs = []
            for seed in range(seeds):
                cost, _, _ = replay(table, tpe_sampler(seed, len(table.configs)), grace,
                                    budget_factor * len(table.configs), rf)
                costs.append(math.inf if cost is None else cost)
            out[f"grace={grace} rf={rf}"] = _costs(costs)
    return out


def sampler_variants(seed: int, n_configs: int) -> dict:
    """TPE settings to compare under ASHA (grace 1, rf 2): the search's own (`search.tuner.tpe_sampler`:
    independent, a third of the budget up to 10 random first), fewer random trials first, and multivariate TPE
    with grouped conditional parameters (it models the per-task in/out and weight choices jointly)."""
    import optuna

    from search.tuner import tpe_sampler

    return {"tpe (the search's)": tpe_sampler(seed, n_configs),
            "tpe, 5 random first": optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
            "tpe multivariate grouped": optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True,
                                                                   group=True),
            "tpe multivariate grouped, 5 random first": optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=5, multivariate=True, group=True)}


def samplers(data: dict, seeds: int, budget_factor: int = 4) -> dict:
    """TPE + ASHA (grace 1, rf 2) per sampler variant: {"name": {"median_cost", "p90_cost", "reached"}}."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # multivariate, group
    table = Table(data)
    out = {}
    for name in sampler_variants(0, len(table.configs)):
        costs = []
        for seed in range(seeds):
            cost, _, _ = replay(table, sampler_variants(seed, len(table.configs))[name], 1,
                                budget_factor * len(table.configs))
            costs.append(math.inf if cost is None else cost)
        out[name] = _costs(costs)
    return out


def transfer_correlation(configs: list[dict]) -> dict:
    """Spearman's rho over the grid between LogME of each phase-2 encoder and the fine-tuned validation score,
    per target (issue 11's bar for a transferability rung: >= 0.7)."""
    from scipy.stats import spearmanr

    out = {}
    for target in TRANSFER_TARGETS:
        pairs = [(c["transfer"][target], c["validation_targets"][target]) for c in configs
                 if c.get("transfer", {}).get(target) is not None and target in c.get("validation_targets", {})]
        if len(pairs) >= 4:
            rho = spearmanr(*zip(*pairs)).statistic
            out[target] = {"rho": float(rho), "n": len(pairs)}
    return out


def planted_effects(configs: list[dict]) -> dict:
    """What each single intermediate task does to each target, in points against the baseline, at each recorded
    learning rate: the toy world's affinities as measured (test split: every target has one)."""
    base = next((c for c in configs if not c["mixture"]), None)
    if base is None or "test_targets" not in base:
        return {}
    out = {}
    for c in configs:
        if len(c["mixture"]) == 1 and "test_targets" in c:
            name = f"{next(iter(c['mixture']))} @ {c['intermediate_lr']:g}"
            out[name] = {t: v - base["test_targets"][t] for t, v in c["test_targets"].items() if t in base["test_targets"]}
            out[name]["validation_average"] = c["final"] - base["final"]
    return out


def _finite(x: float) -> float | None:
    return None if x == math.inf else x


def _costs(costs: list[float]) -> dict:
    """Median and p90 cost over seeds (inf: never reached) and how many seeds reached the best."""
    return {"median_cost": _finite(statistics.median(costs)),
            "p90_cost": _finite(sorted(costs)[math.ceil(0.9 * len(costs)) - 1]),
            "reached": sum(c != math.inf for c in costs), "seeds": len(costs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--record", action="store_true", help="run the grid (slow) and write the record first")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "toy_data")
    ap.add_argument("--grid", choices=sorted(GRIDS), default="subsets",
                    help="subsets: 31 configurations (4 tasks at equal weights x 2 lrs); weights: 106 (weights "
                         "0/0.5/1, 5 tasks, at most 2 at once, x 3 lrs)")
    ap.add_argument("--record-file", type=Path, help="default: the grid's file under benchmarks/records/")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--json", type=Path)
    compare = ap.add_mutually_exclusive_group()
    compare.add_argument("--shapes", action="store_true", help="compare ASHA shapes (grace x reduction factor) for TPE")
    compare.add_argument("--samplers", action="store_true", help="compare TPE settings under ASHA (grace 1, rf 2)")
    args = ap.parse_args()
    path = args.record_file or GRIDS[args.grid]["record"]
    data = (record(args.data_dir.resolve(), path, grid=args.grid) if args.record
            else json.loads(path.read_text()))
    if args.shapes or args.samplers:
        out = shapes(data, args.seeds) if args.shapes else samplers(data, args.seeds)
        grid_cost = Table(data).grid_cost
        for name, r in out.items():
            fmt = lambda v: "never" if v is None else f"{v:.0f} s ({v / grid_cost:.2f} of the grid)"  # noqa: E731
            what = f"TPE + ASHA, {name}" if args.shapes else f"{name} + ASHA"
            print(f"{what}: median {fmt(r['median_cost'])}, p90 {fmt(r['p90_cost'])}, "
                  f"reached {r['reached']}/{r['seeds']}")
        if args.json:
            args.json.write_text(json.dumps({"shapes" if args.shapes else "samplers": out}, indent=1))
        return
    out = run(data, args.seeds)
    print(f"grid: {out['n_configs']} configurations, cost {out['grid_cost']:.0f} s; best {out['best']['mixture'] or 'baseline'}"
          f" (lr {out['best']['intermediate_lr']}) {out['best']['final']:.2f}; baseline {out['baseline_final']:.2f}")
    print(f"{'strategy':20s} {'median cost':>12s} {'p90 cost':>10s} {'reached':>8s} {'median trials':>14s}")
    for name, r in out["strategies"].items():
        fmt = lambda v: "never" if v is None else f"{v:.0f} s"  # noqa: E731
        print(f"{name:20s} {fmt(r['median_cost']):>12s} {fmt(r['p90_cost']):>10s} {r['reached']:>5d}/{r['seeds']}"
              f" {r['median_trials']:>14}")
    for target, r in out["transfer_spearman"].items():
        print(f"transferability (LogME) vs fine-tuned {target}: Spearman {r['rho']:+.2f} over {r['n']} encoders")
    if out["effects"]:
        targets = list(next(iter(out["effects"].values())))
        print("planted effects, points vs the baseline (test; last column: validation objective):")
        print(f"{'':18s}" + "".join(f"{t[:8]:>9s}" for t in targets))
        for name, deltas in out["effects"].items():
            print(f"{name:18s}" + "".join(f"{deltas[t]:+9.1f}" for t in targets))
    print("ratios: " + json.dumps({k: None if v is None else round(v, 3) for k, v in out["ratios"].items()}))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
