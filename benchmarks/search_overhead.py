"""Benchmark: where the default toy search's time goes, and what a repeated trial costs.

Prints: total wall time of `xstilts search` (default toy search), the time inside trials (Ray's
time_total_s, summed and divided by the concurrency), the share spent outside training and evaluation
(Ray start, Optuna, MLflow, checkpointing, scheduling; goal < 15 %), and the cost of a repeated trial
(same configuration again: phases 2 and 3 come from the caches) relative to the first (goal < 10 %).

Run:  python benchmarks/search_overhead.py [--data-dir toy_data]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def repeated_trial(data_dir: Path) -> tuple[float, float]:
    from trainables.config import load_config
    from trainables.pipeline import run_pipeline

    cache = Path(tempfile.mkdtemp(prefix="xstilts-bench-"))
    base_cache = ROOT / ".xstilts/cache"
    for toy in base_cache.glob("toy-model-*"):  # phase 1 is shared; phases 2 and 3 start cold
        shutil.copytree(toy, cache / toy.name)
    cfg = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={data_dir}", f"cache_dir={cache}",
                                                           "tracking.enabled=false"])
    times = []
    for _ in range(2):
        start = time.perf_counter()
        run_pipeline(cfg, log=lambda *a: None)
        times.append(time.perf_counter() - start)
    shutil.rmtree(cache, ignore_errors=True)
    return times[0], times[1]


def toy_search(data_dir: Path) -> dict:
    from rich.console import Console

    from search.config import load_search_config
    from search.run import run_search

    storage = Path(tempfile.mkdtemp(prefix="xstilts-search-"))
    cfg = load_search_config(ROOT / "configs/search/toy.yaml", [f"storage={storage}",
                             f"tracking_uri=sqlite:///{storage / 'mlflow.db'}"])
    # the preset's pipeline reads toy_data relative to the CWD
    start = time.perf_counter()
    summary = run_search(cfg, console=Console(quiet=True))
    wall = time.perf_counter() - start
    inside = 0.0
    for trial in (storage / cfg.name / "ray" / cfg.name).iterdir():
        rows = (trial / "result.json").read_text().splitlines() if (trial / "result.json").exists() else []
        if rows:
            inside += json.loads(rows[-1])["time_total_s"]
    return {"wall": wall, "fit": summary["timing"]["fit_s"], "inside": inside,
            "concurrency": cfg.max_concurrent_trials, "trials": len(summary["trials"]),
            "pruned": sum(t["state"] == "PRUNED" for t in summary["trials"]), "best": summary["best"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="toy_data")
    a = ap.parse_args()
    data_dir = Path(a.data_dir).resolve()
    if not (data_dir / "xstilts.json").exists():
        from trainables.toy import write_toy

        write_toy(data_dir)
    first, second = repeated_trial(data_dir)
    print(f"repeated trial: first {first:.1f} s, repeat {second:.1f} s, ratio {second / first:.1%} (goal < 10 %)")
    s = toy_search(data_dir)
    busy = s["inside"] / s["concurrency"]
    print(f"toy search: {s['trials']} trials ({s['pruned']} pruned), wall {s['wall']:.0f} s, fit {s['fit']:.0f} s, "
          f"inside trials {s['inside']:.0f} s over {s['concurrency']} slots = {busy:.0f} s")
    print(f"share outside training and evaluation: {1 - busy / s['wall']:.1%} of wall (goal < 15 %)")
    print(f"best: trial {s['best']['number']} {s['best']['mixture']} validation average {s['best']['average']:.2f}")


if __name__ == "__main__":
    main()
