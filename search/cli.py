"""The `xstilts` command line.

  xstilts tasks [--json]                               the task table
  xstilts data toy --out DIR [--seed N]                write the toy benchmark
  xstilts data prepare TASK... --data-dir DIR          download Hub sources for offline clusters
  xstilts data inspect TASK --data-dir DIR [--json]    examples per split and language
  xstilts run CONFIG [key=value ...] [--json FILE] [--predictions DIR]
                                                       one three-phase pipeline (CONFIG: a preset name or path)
  xstilts search [CONFIG] [key=value ...] [--resume] [--address ADDR] [--json FILE]
                                                       Ray Tune + Optuna search (default: the toy search)
  xstilts best [SEARCH]                                the best trial of a search (folder, preset or name)
  xstilts report [SEARCH] [--split test] [--json FILE] paper-style table, plots, cost
  xstilts presets [--json]                             the presets that ship with xstilts
  xstilts export [SEARCH] [--trial N] [--out DIR] [--predictions DIR]
                                                       a trial's encoder (HF folder) and/or its test predictions
  xstilts dashboard [SEARCH] [--port 8080]             optuna-dashboard on 127.0.0.1 for a search's study
  xstilts scaling CONFIG [key=value ...]               gain over each model's own baseline vs model size
  xstilts plan CONFIG [key=value ...] --gpus N --gpu-memory-gb G [--json FILE]   memory per GPU; does it fit
  xstilts ui [--port N]                                the MLflow UI on 127.0.0.1 for the local store
  xstilts cache du [SEARCH...] [--json FILE]           the cache's size by kind and by search
  xstilts cache prune SEARCH... [--top 3] [--dry-run]  remove what no named search's kept trials use

Errors a user can fix print one line (`error: ...`) and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from trainables.errors import XstiltsError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Search English intermediate-task mixtures "
                  "that improve zero-shot cross-lingual transfer on XTREME.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"xstilts {version('xstilts')}")
        except PackageNotFoundError:  # a checkout run without an install
            print("xstilts (not installed: run from a checkout)")
        raise typer.Exit()


@app.callback()
def _root(show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                            help="Print the version and exit.")) -> None:
    """Search English intermediate-task mixtures that improve zero-shot cross-lingual transfer on XTREME."""
    from trainables.progress import quiet_libraries

    quiet_libraries()


data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Toy benchmark, Hub downloads, inspection.")
app.add_typer(data_app, name="data")
cache_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The cache: size, and pruning.")
app.add_typer(cache_app, name="cache")
console = Console() if sys.stdout.isatty() else Console(width=200)  # piped: keep tables readable


@app.command()
def tasks(as_json: bool = typer.Option(False, "--json", help="Emit the table as JSON.")) -> None:
    """Print the task table: 10 intermediate tasks and the 9 XTREME targets."""
    from trainables.tasks import TASKS

    if as_json:
        print(json.dumps([t.to_json() for t in TASKS.values()], indent=1))
        return
    table = Table("name", "role", "kind", "train on", "select on", "metric", "languages", "source")
    for t in TASKS.values():
        select = f"{t.selection[0]} {'dev' if t.selection[1] == 'validation' else t.selection[1]}" if t.selection else "-"
        if t.role == "target" and not t.has_validation:
            select += " (test only: not in the objective)"
        table.add_row(t.name, t.role, t.kind, t.train_on or "-", select, t.metric,
                      f"{len(t.languages)}: {' '.join(t.languages[:8])}{' …' if len(t.languages) > 8 else ''}",
                      ", ".join(f"{s.hub_id}/{s.config}" for s in t.sources))
    console.print(table)


@data_app.command("toy")
def data_toy(out: Path = typer.Option(..., "--out", help="Folder to write the toy benchmark into."),
             seed: int = typer.Option(0, help="Same seed, byte-identical files.")) -> None:
    """Write the toy benchmark (every task, Hub schemas, local layout, corpus, tokenizer)."""
    from trainables.toy import write_toy

    write_toy(out, seed)
    console.print(f"toy benchmark written to {out}")


@data_app.command("prepare")
def data_prepare(task_names: List[str] = typer.Argument(..., metavar="TASK..."),
                 data_dir: Path = typer.Option(..., "--data-dir"),
                 refresh: bool = typer.Option(False, "--refresh", help="Re-resolve the sources' commit SHAs; "
                                              "download again the sources that moved.")) -> None:
    """Download the tasks' Hub sources into DATA_DIR (<hub id>/<config>/<split>.parquet), each at one commit SHA,
    recorded in DATA_DIR/xstilts-sources.json. Rate limits (429) are waited out."""
    from trainables.data import SOURCES_MANIFEST, prepare, source_shas

    written = prepare(task_names, data_dir, refresh=refresh)
    pins = source_shas(data_dir)
    console.print(f"{len(written)} files written under {data_dir}"
                  + (f"; {len(pins)} sources pinned in {data_dir / SOURCES_MANIFEST}" if pins else ""))


@data_app.command("inspect")
def data_inspect(task: str, data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Examples per split and language after loading and normalisation."""
    from trainables.data import inspect

    report = inspect(task, data_dir)
    if as_json:
        print(json.dumps(report, indent=1))
        return
    table = Table("split", "language", "examples", title=report["task"])
    for split, langs in report["splits"].items():
        for lang, n in langs.items():
            table.add_row(split, lang, str(n))
    console.print(table)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def run(config: str = typer.Argument(..., help="A pipeline preset by name (toy) or path (my.yaml)"),
        overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]..."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write the results JSON here."),
        languages: bool = typer.Option(False, "--languages", help="Show per-language scores."),
        predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write the test predictions and "
                                                   "labels here in XTREME's submission layout.")) -> None:
    """Run one three-phase pipeline: phase 1 -> intermediate training -> zero-shot targets. No Ray, unless
    distributed.workers > 1 (then a local Ray runs phase 2 and each target on Ray Train workers)."""
    from trainables.runner import run as run_one

    run_one(config, list(overrides or []), str(json_file) if json_file else None, languages, _local_launcher,
            predictions=str(predictions) if predictions else None)


def _local_launcher(cfg):
    """Ray Train workers on a private local Ray (or RAY_ADDRESS's cluster) for `xstilts run`."""
    import atexit

    import ray

    from search.distributed import launcher
    from search.tuner import init_ray

    init_ray(None)
    atexit.register(ray.shutdown)
    return launcher(cfg.distributed, Path(cfg.cache_dir) / "ray-train", cpu=1.0,
                    gpu=1.0 if cfg.device != "cpu" and _has_gpu() else 0.0)


def _has_gpu() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


DEFAULT_SEARCH = "toy"


def _split_config(args: list[str]) -> tuple[str, list[str]]:
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return DEFAULT_SEARCH, args


@app.command()
def search(args: Optional[List[str]] = typer.Argument(None, metavar="[CONFIG] [KEY=VALUE]..."),
           resume: bool = typer.Option(False, "--resume", help="Continue a crashed or stopped search."),
           address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (else RAY_ADDRESS, "
                                                 "else a local Ray)."),
           json_file: Optional[Path] = typer.Option(None, "--json", help="Write the summary JSON here.")) -> None:
    """Search intermediate-task mixtures and learning rates (Ray Tune + Optuna TPE + ASHA, MLflow)."""
    from search.config import load_search_config
    from search.run import run_search

    config, overrides = _split_config(list(args or []))
    cfg = load_search_config(config, overrides)
    if cfg.proxy:  # two searches: on the proxy model, then its best mixtures on this one (search/proxy.py)
        from search.proxy import run_proxy_search

        run_proxy_search(cfg, resume, address, str(json_file) if json_file else None, console)
        return
    run_search(cfg, resume, address, str(json_file) if json_file else None, console)


def locate_search(target: Optional[str]):
    """(search config, search folder) of a search given as a folder, a preset (name or path) or the name of a
    search under the default storage."""
    from search.config import SearchConfig, load_search_config
    from search.tuner import search_dir

    ref = target or DEFAULT_SEARCH
    path = Path(ref)
    folder, is_preset = None, False
    if path.is_dir():
        folder = path.resolve()
    else:
        from trainables.presets import find

        try:
            find(ref, "search")
            is_preset = True
        except XstiltsError:
            is_preset = False
        if is_preset:
            cfg = load_search_config(ref)
            folder = search_dir(cfg)
        else:
            default = search_dir(load_search_config(DEFAULT_SEARCH, [f"name={ref}"]))
            if not default.is_dir():
                known = sorted(p.parent.name for p in default.parent.glob("*/search.json"))
                raise XstiltsError(f"no search {ref!r}: not a folder, a preset or a search under {default.parent} — "
                                   f"searches there: {', '.join(known) or 'none'}") from None
            folder = default
    state = folder / "search.json"
    if not state.exists():
        raise XstiltsError(f"no search has run in {folder} (no search.json) — run `xstilts search` first")
    info = json.loads(state.read_text())
    if path.is_dir() or not is_preset:  # a folder or a name: the settings the search ran with
        cfg = (SearchConfig.model_validate(info["config"]) if "config" in info
               else load_search_config(None, [f"name={folder.name}", f"storage={folder.parent}"]))
    from search.summary import unmasked

    info["tracking_uri"] = unmasked(info["tracking_uri"], cfg.tracking_uri, "MLFLOW_TRACKING_URI")
    if cfg.optuna_storage and "***" in cfg.optuna_storage:
        raise XstiltsError(f"search {cfg.name!r} stores its Optuna study in {cfg.optuna_storage}, whose password is "
                           f"never written down", "name its search preset (with the URI) instead of its folder")
    return cfg, folder, info


@app.command()
def best(target: Optional[str] = typer.Argument(None, metavar="[SEARCH]",
                                                help="A search folder, preset or name (default: toy).")) -> None:
    """Print the best trial of a search (finished or still running)."""
    from search.summary import build_summary, summary_table

    cfg, folder, info = locate_search(target)
    summary = build_summary(cfg, info["tracking_uri"], info["parent_run_id"])
    if summary["best"] is None:
        raise XstiltsError(f"search {cfg.name!r} has no finished trial yet")
    console.print(summary_table(summary, top=1))


@app.command()
def report(target: Optional[str] = typer.Argument(None, metavar="[SEARCH]",
                                                  help="A search folder, preset or name (default: toy)."),
           split: str = typer.Option("validation", help="validation (selection split) or test."),
           json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report JSON here.")) -> None:
    """Paper-style table (rows: baseline, single tasks, mixtures; deltas vs baseline), plots, cost."""
    from search.report import make_report, markdown

    if split not in ("validation", "test"):
        raise XstiltsError(f"--split must be validation or test, not {split!r}", "pass --split validation or --split test")
    _, folder, info = locate_search(target)
    report_ = make_report(folder, split, info)
    print(markdown(report_))
    console.print(f"report written to {folder / 'report'}; plots: " + ", ".join(report_["plots"]))
    if json_file:
        json_file.write_text(json.dumps(report_, indent=1))


@app.command()
def export(target: Optional[str] = typer.Argument(None, metavar="[SEARCH]",
                                                  help="A search folder, preset or name (default: toy)."),
           trial: Optional[int] = typer.Option(None, "--trial", help="Optuna trial number (default: the best)."),
           out: Optional[Path] = typer.Option(None, "--out", help="A new folder for the Hugging Face model."),
           predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write the trial's test "
                                                      "predictions and labels here in XTREME's submission layout "
                                                      "(phase 3 re-run for its encoder; cache hits where possible).")
           ) -> None:
    """Export a trial's phase-2 encoder as a Hugging Face model folder with a model card, and/or its test
    predictions in XTREME's submission layout."""
    from search.export import export_predictions, export_trial
    from search.summary import build_summary

    if out is None and predictions is None:
        raise XstiltsError("nothing to export", "pass --out DIR (the encoder) and/or --predictions DIR")
    cfg, _, info = locate_search(target)
    summary = build_summary(cfg, info["tracking_uri"], info["parent_run_id"])
    if out is not None:
        path = export_trial(summary, trial, out)
        console.print(f"exported to {path} (load: AutoModel.from_pretrained({str(path)!r}); card: {path / 'README.md'})")
    if predictions is not None:
        files = export_predictions(cfg, summary, trial, predictions, console.print)
        console.print(f"test predictions in XTREME's submission layout: {predictions.resolve()} (predictions/, "
                      f"labels/, predictions.zip; {len(files)} files)")


@app.command()
def dashboard(target: Optional[str] = typer.Argument(None, metavar="[SEARCH]",
                                                     help="A search folder, preset or name (default: toy)."),
              port: int = typer.Option(8080, help="Port on 127.0.0.1.")) -> None:
    """Serve optuna-dashboard on 127.0.0.1 for a search's Optuna study (history, importances, parallel coordinates)."""
    import os

    from search.tuner import optuna_storage
    from trainables.tracking import mask

    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise XstiltsError("optuna-dashboard is not installed", "pip install 'xstilts[server]'") from None
    cfg, _, _ = locate_search(target)
    storage = optuna_storage(cfg)
    console.print(f"optuna-dashboard for study {cfg.name!r} ({mask(storage)}) at http://127.0.0.1:{port}")
    run_server(storage, host="127.0.0.1", port=port)  # optuna-dashboard's public entry point; Ctrl-C stops it


def _cache_and_searches(targets: list[str], cache: Optional[Path]) -> tuple[Path, dict[str, Path]]:
    """The cache the searches use (one for all) and their folders; with no search named, every search under the
    default storage."""
    from search.config import load_search_config
    from search.tuner import base_config, search_dir

    from search.cachetool import recorded_cache

    located = [locate_search(t) for t in targets]
    caches = {str(Path(recorded_cache(folder) or base_config(cfg).cache_dir)) for cfg, folder, _ in located}
    if cache is None and len(caches) > 1:
        raise XstiltsError(f"the named searches use different caches ({', '.join(sorted(caches))})",
                           "name searches of one cache at a time, or pass --cache DIR")
    default = load_search_config(DEFAULT_SEARCH)
    root = Path(cache) if cache else Path(caches.pop() if caches else base_config(default).cache_dir)
    if located:
        return root, {folder.name: folder for _, folder, _ in located}
    storage = search_dir(default).parent
    return root, {f.parent.name: f.parent for f in sorted(storage.glob("*/search.json"))}


@cache_app.command("du")
def cache_du(targets: Optional[List[str]] = typer.Argument(None, metavar="[SEARCH]..."),
             cache: Optional[Path] = typer.Option(None, "--cache", help="The cache folder (default: the searches')."),
             json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the figures as JSON.")) -> None:
    """The cache's size by kind (toy-model, phase2, phase3, features, checkpoints) and by search."""
    from search.cachetool import du, human

    root, searches = _cache_and_searches(targets or [], cache)
    report = du(root, searches)
    table = Table("kind", "entries", "size", title=f"cache {root}")
    for kind, row in report["kinds"].items():
        table.add_row(kind, str(row["entries"]), human(row["bytes"]))
    table.add_row("total", "", human(report["total_bytes"]))
    console.print(table)
    if report["searches"]:
        per = Table("search", "entries it uses", "size")
        for name, row in report["searches"].items():
            per.add_row(name, str(row["entries"]), human(row["bytes"]))
        console.print(per)
    if json_path:
        json_path.write_text(json.dumps(report, indent=1))


@cache_app.command("prune")
def cache_prune(targets: List[str] = typer.Argument(..., metavar="SEARCH..."),
                top: int = typer.Option(3, "--top", min=0, help="Keep the entries of each search's top N trials "
                                        "by validation objective (besides its best and seeded trials)."),
                dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; remove nothing."),
                cache: Optional[Path] = typer.Option(None, "--cache", help="The cache folder (default: the searches')."),
                json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the outcome as JSON.")) -> None:
    """Remove the phase-2/phase-3 entries that no named search's best, seeded or top trials use, and finished
    jobs' checkpoints. Run it when the searches sharing the cache have finished."""
    from search.cachetool import human, prune

    root, searches = _cache_and_searches(targets, cache)
    out = prune(root, searches, top, dry_run)
    for name in out["removed"]:
        console.print(f"{'would remove' if dry_run else 'removed'} {root / name}")
    console.print(f"{'would free' if dry_run else 'freed'} {human(out['freed_bytes'])}; kept {len(out['kept'])} "
                  f"entries used by {', '.join(searches)}")
    if json_path:
        json_path.write_text(json.dumps(out, indent=1))


@app.command()
def presets(as_json: bool = typer.Option(False, "--json", help="Emit the list as JSON.")) -> None:
    """List the presets that ship with xstilts (run one by name: `xstilts run toy`, `xstilts search paper`)."""
    from trainables.presets import listing

    items = listing()
    if as_json:
        print(json.dumps(items, indent=1))
        return
    table = Table("name", "kind", "what it is")
    for p in items:
        table.add_row(p["name"], p["kind"], p["description"])
    console.print(table)


@app.command()
def scaling(args: List[str] = typer.Argument(..., metavar="CONFIG [KEY=VALUE]..."),
            address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address.")) -> None:
    """The scaling study: the same configurations and seeds on base models of increasing size."""
    from search.scaling import load_scaling_config, run_scaling

    run_scaling(load_scaling_config(args[0], args[1:]), address, console)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def plan(config: str = typer.Argument(..., help="A pipeline preset (memory) or a search preset (its price), by name "
                                                "or path, e.g. xlmr_large_mnli, paper"),
         overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]..."),
         gpus: int = typer.Option(1, "--gpus", min=0, help="GPUs: of one trial (memory), of the cluster (price)."),
         gpu_memory_gb: float = typer.Option(80.0, "--gpu-memory-gb", help="Memory of one GPU."),
         gpu_type: Optional[str] = typer.Option(None, "--gpu-type", help="h100, a100, h200 or cpu: price a search "
                                                "preset (the default for a name that is only a search preset)."),
         json_file: Optional[Path] = typer.Option(None, "--json", help="Write the plan JSON here.")) -> None:
    """Per-GPU memory of a pipeline (weights, grads, optimizer, activations), whether it fits, what to change; or,
    for a search preset, its GPU-hours and wall-clock hours per phase and target (search/price.py)."""
    from trainables.config import load_config
    from trainables.plan import plan as make_plan
    from trainables.presets import find

    if gpu_type is None:
        try:
            find(config, "pipeline")
        except XstiltsError:
            find(config, "search")  # neither: the search preset's error lists the known ones
            gpu_type = "h100"
    if gpu_type is not None:
        return _price(config, list(overrides or []), gpus, gpu_memory_gb, gpu_type.lower(), json_file)
    cfg = load_config(config, list(overrides or []))
    result = make_plan(cfg, max(1, gpus), gpu_memory_gb)
    table = Table("component", "GB per GPU", title=f"{result['model']['name']} ({result['model']['params'] / 1e6:,.0f}M "
                  f"parameters), {result['binding_phase']}: {'fits' if result['fits'] else 'does NOT fit'} "
                  f"{gpus} x {gpu_memory_gb:g} GB")
    for key, value in result["breakdown"].items():
        table.add_row(key, f"{value:.2f}")
    table.add_row("total", f"{result['per_gpu_gb']:.2f}")
    console.print(table)
    if cfg.distributed.workers != gpus:
        console.print(f"planned for distributed.workers={cfg.distributed.workers} (strategy "
                      f"{cfg.distributed.strategy}); --gpus {gpus} only bounds it — set distributed.workers={gpus} "
                      f"to plan {gpus} workers")
    if result["suggestion"]:
        sug = result["suggestion"]
        console.print(f"suggestion: {' '.join(sug['overrides'])} (needs {sug['gpus_needed']} GPUs, "
                      f"{sug['per_gpu_gb']:.1f} GB each)" if sug.get("overrides") else f"suggestion: {sug['reason']}")
    if json_file:
        json_file.write_text(json.dumps(result, indent=1))


def _price(config: str, overrides: list[str], gpus: int, gpu_memory_gb: float, gpu_type: str,
           json_file: Optional[Path]) -> None:
    from search.config import load_search_config
    from search.price import GPU_PEAK, price

    if gpu_type not in (*GPU_PEAK, "cpu"):
        raise XstiltsError(f"unknown --gpu-type {gpu_type!r} — use one of {', '.join((*GPU_PEAK, 'cpu'))}")
    if gpu_type != "cpu" and gpus < 1:
        raise XstiltsError("pricing on GPUs needs --gpus N (N >= 1), or --gpu-type cpu")
    from trainables.config import read_preset

    _, raw = read_preset(config, "search config", kind="search")
    if "models" in raw:  # a scaling study: one search per model, priced each and summed
        from search.scaling import _search_cfg, load_scaling_config

        study = load_scaling_config(config, overrides)
        parts = {m.label: price(_search_cfg(study, m), gpus, gpu_type) for m in study.models}
        for label, part in parts.items():
            console.print(f"{label}: {part['gpu_hours']:.2f} {part['unit']}, wall ~{part['wall_hours']:.2f} h")
        result = {"gpu_hours": round(sum(p["gpu_hours"] for p in parts.values()), 3),
                  "wall_hours": round(sum(p["wall_hours"] for p in parts.values()), 3),
                  "trials": sum(p["trials"] for p in parts.values()), "unit": next(iter(parts.values()))["unit"],
                  "models": parts, "gpu_memory_gb": gpu_memory_gb}
        console.print(f"scaling study {study.name}: {result['gpu_hours']:.2f} {result['unit']}, searches one after "
                      f"another ~{result['wall_hours']:.2f} h")
        if study.seeds == "auto":  # priced at its first round; each seed costs the same
            most = round(result["gpu_hours"] * study.auto.most / study.auto.start, 3)
            result["seeds"] = {"auto": study.auto.model_dump(), "priced_at": study.auto.start,
                               "gpu_hours_at_most": most}
            console.print(f"seeds: auto — priced at its first {study.auto.start} seeds; up to {most:.2f} "
                          f"{result['unit']} if it runs to {study.auto.most}")
        if json_file:
            json_file.write_text(json.dumps(result, indent=1))
        return
    scfg = load_search_config(config, overrides)
    result = price(scfg, gpus, gpu_type)
    result["gpu_memory_gb"] = gpu_memory_gb
    unit = result["unit"]
    table = Table("part", unit, title=f"search {scfg.name}: {result['trials']} trials on "
                  f"{gpus if gpu_type != 'cpu' else 'this machine'} {gpu_type.upper()}")
    b = result["breakdown"]
    table.add_row("phase 2", f"{b['phase2']:.2f}")
    for target, hours in b["phase3"].items():
        table.add_row(f"phase 3 {target}", f"{hours:.2f}")
    table.add_row("evaluation", f"{b['evaluation']:.2f}")
    table.add_row("retrieval", f"{b['retrieval']:.2f}")
    table.add_row("total", f"{result['gpu_hours']:.2f}")
    console.print(table)
    a = result["assumptions"]
    console.print(f"wall clock ~{result['wall_hours']:.2f} h ({a['trials_at_once']} trials at once, "
                  f"{a['gpus_per_trial']} per trial); throughput: {a['throughput']}")
    console.print("assumptions: " + "; ".join(f"{k}: {v}" for k, v in a.items()
                                              if k not in ("throughput", "trials_at_once", "gpus_per_trial")))
    if json_file:
        json_file.write_text(json.dumps(result, indent=1))


@app.command()
def ui(target: Optional[str] = typer.Argument(None, metavar="[SEARCH]",
                                             help="A search folder, preset or name: print the URL of its runs."),
       port: int = typer.Option(5000, help="Port on 127.0.0.1."),
       store: Optional[str] = typer.Option(None, help="Backend store URI (default: the search's, else the local "
                                                      "SQLite store).")) -> None:
    """Serve the MLflow UI on 127.0.0.1; with a search, print the URL of that search's runs table."""
    import os

    from trainables.tracking import TrackingStore, default_uri, mask

    uri, page = store or default_uri(), ""
    if target is not None:
        cfg, _, info = locate_search(target)
        uri = store or info["tracking_uri"]
        exp_id = TrackingStore(uri).experiment_id(cfg.experiment_name)
        if exp_id is None:
            raise XstiltsError(f"search {cfg.name!r} has no MLflow experiment {cfg.experiment_name!r} in {mask(uri)}",
                               "pass --store with the tracking URI the search used")
        page = f"/#/experiments/{exp_id}/runs"  # the runs table (MLflow 3 otherwise may open a GenAI overview)
    if uri.startswith(("http://", "https://")):  # a server already serves the UI
        console.print(f"runs of this search: {mask(uri.rstrip('/'))}{page}")
        return
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    _serve_until_stopped([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                          "--port", str(port)], f"http://127.0.0.1:{port}/health",
                         f"MLflow UI for {mask(uri)} at http://127.0.0.1:{port}{page}", port)


def _serve_until_stopped(command: list[str], health: str, ready: str, port: int, wait_s: float = 120.0) -> None:
    """Run a server in its own process group, print `ready` once `health` answers (not before: a URL printed
    while the server starts, or when its port is taken, is a URL that fails), then wait; Ctrl-C or SIGTERM stop
    the server and everything it started."""
    import os
    import signal
    import subprocess
    import time
    import urllib.request

    import socket

    with socket.socket() as probe:  # a taken port would let another server answer the health check for us
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise XstiltsError(f"port {port} on 127.0.0.1 is taken", "pass another --port") from None
    # the server's own chatter goes to stderr: stdout carries the one line with the URL (scripts read it)
    proc = subprocess.Popen(command, start_new_session=True, stdout=sys.stderr)

    def stop(*_):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        deadline = time.time() + wait_s
        while True:
            if proc.poll() is not None:
                raise XstiltsError(f"the server exited before it answered (status {proc.returncode}; is port {port} "
                                   f"taken?)", f"pass another --port")
            try:
                with urllib.request.urlopen(health, timeout=2):
                    break
            except OSError:
                if time.time() > deadline:
                    raise XstiltsError(f"the server did not answer at {health} within {wait_s:.0f} s",
                                       "look at its output above, or pass another --port") from None
                time.sleep(0.5)
        console.print(ready)
        if proc.wait():
            raise XstiltsError(f"the server stopped (status {proc.returncode})", "look at its output above")
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning XstiltsError into one line and exit status 2."""
    try:
        app(args=argv, standalone_mode=False)
    except XstiltsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code)
    except typer.Abort:
        raise SystemExit(130)
    except Exception as exc:  # click usage errors come through standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
