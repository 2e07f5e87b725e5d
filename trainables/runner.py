"""`xstilts run` / `python -m trainables run`: one pipeline, no Ray, a results table, JSON and MLflow.

  python -m trainables run configs/pipeline/toy.yaml [key=value ...] [--json out.json] [--languages]
                                                    [--predictions DIR]   (XTREME's submission layout)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trainables.config import load_config
from trainables.errors import XstiltsError


def score_label(summary: dict) -> str:
    """XTREME only for what XTREME would print (nine targets, every language, whole test sets); otherwise say
    what the number is (the results' `score_name` and `missing` say why it is not XTREME)."""
    return "XTREME" if summary.get("xtreme") is not None else f"average of {summary['n_targets']} targets"


def format_table(results: dict, languages: bool = False) -> str:
    from trainables.metrics import primary

    rows = [f"{'target':10s} {'score':>7s}" + ("  per language" if languages else "")]
    for name, entry in results["targets"].items():
        line = f"{name:10s} {entry['score']:7.2f}"
        if languages:
            line += "  " + " ".join(f"{l}:{primary(v):.1f}" for l, v in entry["languages"].items())
        rows.append(line)
    val = results["validation"]
    rows.append(f"{score_label(results)}: {results['average']:.2f}   "
                + (f"(validation, {score_label(val)}: {val['average']:.2f})" if val["average"] is not None else ""))
    if results.get("missing"):  # what keeps the number from being XTREME's (metrics.describe)
        rows.append(f"note: {results.get('score_name')}")
    for name, entry in results["targets"].items():
        for key, per_lang in entry.get("notes", {}).items():
            if key == "selection":  # where phase-3 selection found the model: in the JSON, not worth a line
                continue
            rows.append(f"note: {name} {key}: " + ", ".join(f"{l} {v}" for l, v in per_lang.items()))
    return "\n".join(rows)


def run(config: str, overrides: list[str], json_path: str | None = None, languages: bool = False,
        launcher_for=None, predictions: str | None = None) -> dict:
    """One pipeline. `launcher_for(cfg)` gives the job launcher for `distributed.workers > 1` (`xstilts run`
    passes Ray Train's; `python -m trainables` has none and refuses such configs). `predictions`: a folder for
    the test predictions in XTREME's submission layout (`trainables.predictions`)."""
    from trainables.pipeline import run_pipeline
    from trainables.tracking import MlflowTracker, NullTracker, mask

    cfg = load_config(config, overrides)
    if cfg.distributed.workers > 1 and launcher_for is None:
        raise XstiltsError("distributed.workers > 1 runs on Ray Train workers: use `xstilts run` (not "
                           "`python -m trainables run`), or set distributed.workers=1")
    from trainables.preflight import check_pipeline, check_tracking

    check_pipeline(cfg)  # cheap checks first: nothing is written or started before they pass
    if predictions is not None:
        from trainables.pipeline import check_predictions

        check_predictions(cfg)
    if cfg.tracking.enabled:
        from trainables.tracking import default_uri

        check_tracking(cfg.tracking.uri or default_uri())
    launcher = launcher_for(cfg) if cfg.distributed.workers > 1 else None
    tracker = NullTracker()
    if cfg.tracking.enabled:
        tracker = MlflowTracker(cfg.tracking.uri, cfg.tracking.experiment, cfg.name)
    try:
        results = run_pipeline(cfg, tracker=tracker, launcher=launcher, predictions=predictions)
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close()
    results["mlflow_run_id"] = tracker.run_id
    print(format_table(results, languages))
    if json_path:
        path = Path(json_path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.rename(path)  # never a half-written results file
    print(f"wrote: cache {cfg.cache_dir}" + (f"; results {Path(json_path).resolve()}" if json_path else "")
          + (f"; test predictions {Path(predictions).resolve()}" if predictions is not None else "")
          + (f"; MLflow run {tracker.run_id} in {mask(tracker.uri)}" if tracker.run_id else ""))
    return results


def main(argv: list[str]) -> int:
    args = list(argv)
    if args[:1] == ["run"]:
        args = args[1:]
    json_path = predictions = None
    if "--json" in args:
        i = args.index("--json")
        json_path = args[i + 1]
        del args[i:i + 2]
    if "--predictions" in args:
        i = args.index("--predictions")
        predictions = args[i + 1]
        del args[i:i + 2]
    languages = "--languages" in args
    args = [a for a in args if a != "--languages"]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        run(args[0], args[1:], json_path, languages, predictions=predictions)
    except XstiltsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
