"""Benchmark: is `xstilts plan SEARCH_PRESET --gpu-type cpu` honest? Its estimate of one toy trial against the
same trial run here.

The toy search's seeded configurations (the baseline and {mnli: 1.0}, with the toy search's overrides) run as
`xstilts run` would, on a fresh cache (the toy model, phase 1, is built first and not counted: a search builds it
once); the measured seconds are phase 2 plus every target (tokenising, fine-tuning, selection, evaluation,
retrieval). The estimate is `search.price.trial_cost` for the same configuration, with this CPU's FLOP/s
measured on the spot. Prints and (--json) writes {"configs": {name: {"estimated_s", "measured_s", "ratio",
"parts": {...}}}, "ratio"}. Goal: ratio (estimated / measured, both configurations summed) within 0.75-1.25.

Run:  python benchmarks/plan_accuracy.py [--json out.json]   (~5 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from search.config import load_search_config
    from search.price import Sizes, Throughput, trial_cost
    from search.tuner import base_config
    from trainables.config import update
    from trainables.mixture import Mixture
    from trainables.pipeline import base_model, run_pipeline
    from trainables.toy import write_toy

    work = Path(tempfile.mkdtemp(prefix="plan-accuracy-"))
    data = write_toy(work / "toy", seed=0)
    scfg = load_search_config("toy", [f"storage={work / 'searches'}", f"data_dir={data}",
                                      f"cache_dir={work / 'cache'}"])
    base = update(base_config(scfg), {"progress": False})
    base_model(base, data, log=lambda *a: None)  # phase 1, outside the measurement
    sizes, speed = Sizes(base, data), Throughput(base, "cpu")
    out = {"configs": {}, "cpu_gflops": round(speed.cpu_flops / 1e9, 2)}
    for weights in scfg.points_to_evaluate:
        name = "+".join(weights) or "baseline"
        cfg = update(base, {"intermediate": {"mixture": dict(weights)}})
        probs = Mixture(dict(weights)).probabilities() if weights else {}
        parts = trial_cost(cfg, sizes, speed, probs)
        estimated = parts["phase2"] + sum(sum(parts[k].values()) for k in ("phase3", "evaluation", "retrieval"))
        results = run_pipeline(cfg, log=lambda *a: None)
        timing = results["timing"]
        measured = timing.get("phase2_s", 0.0) + sum(v for k, v in timing.items() if k.startswith("target/"))
        out["configs"][name] = {"estimated_s": round(estimated, 1), "measured_s": round(measured, 1),
                                "ratio": round(estimated / measured, 3),
                                "parts": {"estimated": {"phase2": round(parts["phase2"], 1),
                                                        **{t: round(parts["phase3"].get(t, 0) + parts["evaluation"].get(t, 0)
                                                                    + parts["retrieval"].get(t, 0), 1)
                                                           for t in cfg.targets}},
                                          "measured": {"phase2": round(timing.get("phase2_s", 0.0), 1),
                                                       **{k.split("/", 1)[1][:-2]: round(v, 1) for k, v in timing.items()
                                                          if k.startswith("target/")}}}}
        print(f"{name:10s} estimated {estimated:7.1f} s   measured {measured:7.1f} s   ratio {estimated / measured:.2f}")
    est = sum(c["estimated_s"] for c in out["configs"].values())
    meas = sum(c["measured_s"] for c in out["configs"].values())
    out["ratio"] = round(est / meas, 3)
    print(f"both: estimated {est:.1f} s, measured {meas:.1f} s, ratio {est / meas:.2f} (goal 0.75-1.25); "
          f"this CPU {out['cpu_gflops']} GFLOP/s per process")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
