"""`xstilts export SEARCH [--trial N] --out DIR`: a trial's phase-2 encoder as a Hugging Face model folder.

The folder is the phase-2 cache entry's `save_pretrained` output (config, weights, tokenizer), without the
cache manifest, plus a model card (`README.md`, built with `huggingface_hub.ModelCard`: Hub metadata — canonical
base model id, languages, datasets, licence, per-target scores as model-index results — then the mixture the
encoder was trained on, its learning rates, per-target validation and test scores, the search it came from)
and `xstilts.json` (the same, as data).
Load it with `AutoModel.from_pretrained(DIR)`. Default trial: the search's best (validation objective).
Written to a temporary sibling and renamed, so DIR is either complete or absent.

`--predictions DIR` writes the trial's test predictions in XTREME's submission layout (`trainables.predictions`):
the trial's pipeline config is rebuilt from its Optuna parameters (`TrialSpec`, the search's first seed), its
phase-2 encoder is the cache entry its MLflow run recorded (used as is: phase 2 never runs again), and phase 3
runs again for that encoder — cache hits for targets whose phase-3 entries hold their test predictions,
recomputed otherwise (entries from before predictions were kept, targets a pruned trial never reached, another
device type than the trial's). The baseline trial has predictions too (its encoder is the pretrained model).

Run:  xstilts export toy --out best-encoder          (or --trial 3)
      xstilts export toy --predictions submission    (DIR/predictions/<task>/test-<lang>.<tsv|json>, DIR/labels/...)
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


HUB_IDS = {"xlm-roberta-base": "FacebookAI/xlm-roberta-base", "xlm-roberta-large": "FacebookAI/xlm-roberta-large"}
LICENSES = {"FacebookAI/xlm-roberta-base": "mit", "FacebookAI/xlm-roberta-large": "mit",
            "facebook/xlm-roberta-xl": "mit", "facebook/xlm-roberta-xxl": "mit"}


def card_data(summary: dict, trial: dict, params: dict, base_model: str, test: dict | None = None):
    """The card's metadata as the Hub reads it (`huggingface_hub.ModelCardData`): the canonical base model id and
    revision, the languages of the targets scored, the datasets trained and evaluated on, the licence, and the
    per-target scores as `model-index` results (validation and, where logged, test)."""
    from huggingface_hub import EvalResult, ModelCardData

    from trainables.tasks import TASKS

    hub_id = HUB_IDS.get(base_model, base_model)
    on_hub = "/" in hub_id  # the toy model, or a local folder, is no Hub model
    targets = {**trial["targets"], **(test or {})}
    # (a toy or local base model: its toy languages are not the task table's, so none are claimed)
    languages = sorted({lang for t in targets if t in TASKS for lang in TASKS[t].languages}) if on_hub else None
    datasets = sorted({src.hub_id for t in [*trial["mixture"], *targets] if t in TASKS
                       for src in TASKS[t].sources if "/" in src.hub_id})
    results = [EvalResult(task_type="zero-shot-cross-lingual-transfer", task_name=f"{t} (zero-shot from English)",
                          dataset_type=TASKS[t].sources[0].hub_id, dataset_name=t, dataset_split=split,
                          # the source's config (`PAN-X.{lang}`): the Hub tells results apart by type, config and
                          # split, so three targets of google/xtreme without it would merge into one
                          dataset_config=TASKS[t].sources[0].config or t,
                          metric_type=TASKS[t].metric, metric_value=round(float(v), 2),
                          metric_name=f"{TASKS[t].metric}, mean over languages")
               for split, scores in (("validation", trial["targets"]), ("test", test or {}))
               for t, v in sorted(scores.items()) if t in TASKS and v is not None]
    revision = params.get("model.revision") or params.get("revision")
    return ModelCardData(base_model=hub_id if on_hub else None, language=languages, datasets=datasets,
                         license=LICENSES.get(hub_id), library_name="transformers", pipeline_tag="feature-extraction",
                         tags=["xstilts", "intermediate-task-training", "xtreme"],
                         model_name=f"{base_model} + {mixture_label(trial['mixture'])}", eval_results=results or None,
                         **({"base_model_revision": revision} if revision else {}))


def model_card(summary: dict, trial: dict, params: dict, base_model: str, test: dict | None = None) -> str:
    """A model card (`huggingface_hub.ModelCard`): the Hub's metadata (`card_data`), then what the encoder is and
    how it scored."""
    from huggingface_hub import ModelCard

    mixture = trial["mixture"]
    body = ["", f"# {base_model} after intermediate training on {mixture_label(mixture)}", "",
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
            "| target | validation | test |", "|---|---|---|",
            *(f"| {t} | {_num(trial['targets'].get(t))} | {_num((test or {}).get(t))} |"
              for t in sorted({*trial["targets"], *(test or {})})), ""]
    data = card_data(summary, trial, params, base_model, test)
    return str(ModelCard("---\n" + data.to_yaml() + "\n---\n" + "\n".join(body)))


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
        (tmp / "README.md").write_text(model_card(summary, trial, run.params, base_model, info["test"]))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_predictions(cfg, summary: dict, number: int | None, out: Path, log=print) -> list[Path]:
    """Write the trial's test predictions and labels under `out` (module docstring); returns the files written."""
    from search.cluster import search_data
    from search.space import TrialSpec
    from search.tuner import base_config
    from trainables.pipeline import Pipeline

    trial = choose(summary, number)
    store = TrackingStore(summary["mlflow"]["tracking_uri"])
    run = store.run(trial["mlflow_run_id"]) if trial["mlflow_run_id"] else None
    recorded = Path(run.tags.get("phase2.dir", "")) if run else None
    if trial["mixture"] and not (recorded and (recorded / MANIFEST).is_file()):
        raise XstiltsError(f"trial {trial['number']}'s phase-2 encoder is not in the cache "
                           f"({recorded if run else 'no MLflow run recorded it'})",
                           "run the search again with --resume on a machine that sees its cache_dir (a cache hit "
                           "rebuilds nothing), then export")
    base, _ = search_data(cfg, base_config(cfg), log)
    pcfg = TrialSpec.from_params(trial["params"], cfg.candidates).with_seed(base.seed).pipeline_config(base)
    pipe = Pipeline(pcfg, log=log, predictions=True, encoder=recorded if trial["mixture"] else None).prepare()
    for result in pipe.targets():
        log(f"  {result.name:10s} {'cache hit' if result.cached else 'recomputed'}")
    return pipe.write_predictions(Path(out))
