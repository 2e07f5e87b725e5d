"""`xstilts export SEARCH [--trial N] --out DIR`: a trial's phase-2 encoder as a Hugging Face model folder.

The folder is the phase-2 cache entry's `save_pretrained` output (config, weights, tokenizer), without the
cache manifest, plus a model card (`README.md`: the mixture the encoder was trained on, its learning rates,
per-target validation and test scores, the search it came from) and `xstilts.json` (the same, as data).
Load it with `AutoModel.from_pretrained(DIR)`. Default trial: the search's best (validation objective).
Written to a temporary sibling and renamed, so DIR is either complete or absent.

Run:  xstilts export toy --out best-encoder          (or --trial 3)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from search.summary import mixture_label
from trainables import names
from trainables.cache import MANIFEST
from trainables.errors import XstiltsError
from trainables.tracking import TrackingStore, mask


def choose(summary: dict, number: int | None) -> dict:
    """The summary's trial numbered `number` (default: the best finished one)."""
    trials = {t["number"]: t for t in summary["trials"]}
    if number is None:
        if summary["best"] is None:
            raise XstiltsError(f"search {summary['name']!r} has no finished trial to export",
                               "wait for a trial to finish, or pick one with --trial N")
        number = summary["best"]["number"]
    if number not in trials:
        raise XstiltsError(f"search {summary['name']!r} has no finished or pruned trial {number}",
                           f"pick one of: {', '.join(map(str, sorted(trials))) or 'none yet'}")
    return trials[number]


def model_card(summary: dict, trial: dict, params: dict, base_model: str) -> str:
    """A model card: YAML front matter for the Hub, then what the encoder is and how it scored."""
    mixture = trial["mixture"]
    lines = ["---", "library_name: transformers", "tags: [xstilts, intermediate-task-training, xtreme]",
             f"base_model: {base_model}", "---", "",
             f"# {base_model} after intermediate training on {mixture_label(mixture)}", "",
             f"Phase-2 encoder of trial {trial['number']} ({trial['state']}) of the xstilts search "
             f"`{summary['name']}` (MLflow run `{trial['mlflow_run_id']}`, experiment "
             f"`{summary['mlflow']['experiment']}`). Heads are not included: fine-tune a head per target task, "
             "as in Phang et al. (2020).", "", "## Intermediate training", "",
             "| task | probability |", "|---|---|",
             *(f"| {task} | {p:.3f} |" for task, p in sorted(mixture.items())), "",
             "| setting | value |", "|---|---|",
             *(f"| {k} | {params[k]} |" for k in ("intermediate.lr", "intermediate.steps", "intermediate.sampler",
                                                   "intermediate.temperature", "target.lr", "seed") if k in params),
             "", "## Zero-shot cross-lingual scores (mean over languages)", "",
             f"Validation average (the search's objective): {_num(trial['average'])}; "
             f"test average: {_num(trial['test_average'])}.", "",
             "| target | validation |", "|---|---|",
             *(f"| {t} | {v:.2f} |" for t, v in trial["targets"].items()), ""]
    return "\n".join(lines)


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def export_trial(summary: dict, number: int | None, out: Path) -> Path:
    """Copy the trial's phase-2 encoder to `out` with a model card; returns `out`."""
    trial = choose(summary, number)
    out = Path(out)
    if out.exists():
        raise XstiltsError(f"{out} already exists", "pass a new folder to --out, or remove it first")
    if not trial["mixture"]:
        raise XstiltsError(f"trial {trial['number']} is the baseline: it trained nothing in phase 2",
                           "its encoder is the pretrained model itself; export another trial with --trial N")
    store = TrackingStore(summary["mlflow"]["tracking_uri"])
    run = store.run(trial["mlflow_run_id"]) if trial["mlflow_run_id"] else None
    source = Path(run.tags.get("phase2.dir", "")) if run else Path()
    if not run or not (source / MANIFEST).is_file():
        raise XstiltsError(f"trial {trial['number']}'s phase-2 encoder is not in the cache "
                           f"({source if run else 'no MLflow run recorded it'})",
                           "run the search again with --resume on a machine that sees its cache_dir (a cache hit "
                           "rebuilds nothing), then export")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(MANIFEST))
        base_model = run.params.get("base_model", "unknown")
        info = {"search": summary["name"], "trial": trial["number"], "state": trial["state"],
                "mixture": trial["mixture"], "params": trial["params"], "validation_average": trial["average"],
                "test_average": trial["test_average"], "targets_validation": trial["targets"],
                "test": names.target_scores(run.metrics, "test"), "base_model": base_model,
                "mlflow": {**summary["mlflow"], "run_id": trial["mlflow_run_id"]}, "phase2_entry": source.name}
        (tmp / "xstilts.json").write_text(json.dumps(mask(info), indent=1))
        (tmp / "README.md").write_text(model_card(summary, trial, run.params, base_model))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
