"""`xstilts search`: run a search end to end and write its summary.

  xstilts search                                   the toy search (tiny model, CPU, 8 trials, 2 at a time)
  xstilts search configs/search/mixture.yaml num_samples=40 --address auto
  xstilts search configs/search/toy.yaml --resume  continue after a crash; nothing finished is redone
"""

from __future__ import annotations

import json
import os
import time
from logging.handlers import MemoryHandler
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table
import ray
from ray import tune

from search.cluster import OFFLINE, check_nodes, forwarded_env, search_data
from search.config import SearchConfig
from search.finalists import check_finalists, run_finalists
from search.space import TrialSpec
from search.summary import build_summary, mixture_label, summary_table
from search.trainable import METRIC
from search.tracking import TrackTrials
from search.tuner import (base_config, build_tuner, check_fits, check_objective, check_resources, failed_trials,
                          finished_all_rungs, init_ray, name_objectives, optuna_storage, parent_run, search_dir,
                          settle_study, trial_context)
from trainables.errors import XstiltsError
from trainables.tracking import context_tags, default_uri, mask


class LiveTable(tune.Callback):
    """A live table of trials (mixture, status, score) on the terminal; one line per event otherwise. A trial
    that ended before its last rung (`max_t`) was stopped by ASHA and shows PRUNED; ERROR: out of retries.

    The terminal table shows the running trials (up to `SHOW_RUNNING`, the latest) and the best `SHOW_BEST`
    finished ones, with counts in its title, redrawn at most every `REDRAW_S` seconds: drawing every trial at
    every event made a 1,000-trial search spend minutes of the driver's time redrawing (quadratic)."""

    SHOW_RUNNING, SHOW_BEST, REDRAW_S = 16, 10, 0.5

    def __init__(self, candidates: list[str], max_t: int):
        self.candidates, self.rows, self.max_t = candidates, {}, max_t
        self.running: dict[str, None] = {}  # trial ids, oldest first
        self.best: list[str] = []  # finished trial ids, best score first (SHOW_BEST at most)
        self.counts: dict[str, int] = {}  # final status -> trials
        self._drawn, self._dirty = 0.0, False
        self._console = self._live = None

    def __getstate__(self):  # the Tuner pickles its callbacks; consoles hold locks
        return {**self.__dict__, "_console": None, "_live": None}

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = Console()
        return self._console

    @property
    def live(self) -> Live | None:
        if self._live is None and self.console.is_terminal:
            self._live = Live(console=self.console, auto_refresh=False)
        return self._live

    def _update(self, trial, status: str, score=None) -> None:
        tid = trial.trial_id
        old = self.rows.get(tid, {})
        label = old.get("mixture") or mixture_label(TrialSpec.from_params(trial.config, self.candidates).mixture)
        row = self.rows[tid] = {"n": trial.config.get("optuna_trial"), "mixture": label, "status": status,
                                "score": score if score is not None else old.get("score")}
        if old.get("status", "RUNNING") != "RUNNING":  # retried after an error, or a second verdict
            self.counts[old["status"]] -= 1
        if tid in self.best:
            self.best.remove(tid)
        if status == "RUNNING":
            self.running[tid] = None
        else:
            self.running.pop(tid, None)
            self.counts[status] = self.counts.get(status, 0) + 1
            if row["score"] is not None and status != "ERROR":
                self.best.append(tid)
                self.best.sort(key=lambda t: -self.rows[t]["score"])
                del self.best[self.SHOW_BEST:]
        if self.live:
            self._dirty = True
            self._draw()
        elif status != "RUNNING" or score is None:
            self.console.print(f"trial {self.rows[trial.trial_id]['n']}: {label}: {status}"
                               + (f" {METRIC}={score:.2f}" if score is not None else ""))

    def _draw(self, force: bool = False) -> None:
        if not force and (not self._dirty or time.monotonic() - self._drawn < self.REDRAW_S):
            return  # on_step_end draws it soon
        self._drawn, self._dirty = time.monotonic(), False
        running = list(self.running)[-self.SHOW_RUNNING:]
        hidden = len(self.running) - len(running)
        title = ", ".join([f"{len(self.running)} running"] + [f"{k} {s.lower()}" for s, k in self.counts.items() if k])
        table = Table("#", "mixture", "status", METRIC, title=title,
                      caption=f"(and {hidden} more running)" if hidden else None)
        for tid in running + self.best:
            r = self.rows[tid]
            table.add_row(str(r["n"]), r["mixture"], r["status"], "" if r["score"] is None else f"{r['score']:.2f}")
        self.live.update(table, refresh=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.live and not self.live.is_started:
            self.live.start()
        self._update(trial, "RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._update(trial, "RUNNING", result.get(METRIC))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._update(trial, "DONE" if finished_all_rungs(trial.last_result, self.max_t) else "PRUNED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._update(trial, "ERROR")

    def on_step_end(self, iteration, trials, **info):  # Tune's loop turns many times a second
        if self.live and self.live.is_started:
            self._draw()

    def on_experiment_end(self, trials, **info):
        if self.live and self.live.is_started:
            self._draw(force=True)
            self.live.stop()


LIBRARY_LOGGERS = ("ray", "mlflow", "optuna")


class _Held(MemoryHandler):
    """Library log records held until the search folder may be written: bounded, never flushed by itself."""

    def emit(self, record):
        if len(self.buffer) < self.capacity:
            self.buffer.append(record)


def libraries_log_to(path: Path | None) -> None:
    """Ray's, MLflow's and Optuna's own logs (Ray's start-up and token notices, trial failures with their
    tracebacks, retries; MLflow's database set-up; Optuna's new-study lines) go to a file in the search folder;
    the terminal keeps the live table, the results and one `error:` line per problem. `path` None: hold them in
    memory until a file is given — the search folder is written only once every check has passed, so a refused
    search leaves nothing behind. Called again after `ray.init`, which may add its console handler back; a later
    search in the same process (a proxy search's second stage) moves them to its own file."""
    import logging

    import mlflow  # noqa: F401  (importing it installs its console handler, replaced below)

    # MLflow prints "View run ... at: URL" on stdout each time a run on a server is closed (the driver closes every
    # trial's): the search prints where its runs are once, at the end
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

    ours = {h for n in LIBRARY_LOGGERS for h in logging.getLogger(n).handlers if getattr(h, "xstilts", False)}
    held = [h for h in ours if isinstance(h, _Held)]
    if path is None and held:
        handler = held[0]  # keep holding in the same buffer
    elif path is None:
        handler = _Held(capacity=10_000)
    else:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for buffer in held:  # what was said before the folder existed
            buffer.setTarget(handler)
            buffer.flush()
    handler.xstilts = True
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            console = isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler)
            if (console or getattr(old, "xstilts", False)) and old is not handler:  # (MLflow's stream is its own)
                logger.removeHandler(old)
        if handler not in logger.handlers:
            logger.addHandler(handler)
        logger.propagate = False


def preflight(cfg: SearchConfig, base, uri: str, resume: bool, address: str | None) -> None:
    """The cheap checks, before Ray starts or anything is written (one line each: what, and how to fix it)."""
    from trainables.preflight import check_pipeline, check_tracking as check_server, toy_data_pending

    # the data_dir trials will read (search/cluster.py search_data); the toy benchmark, written on first use, and
    # replayed trials need no look: a gold-only BUCC dev set in the objective is refused here
    data_dir = None if cfg.replay or toy_data_pending(base) else (
        Path(base.data_dir) if base.data_dir else Path(cfg.storage).resolve() / "data")
    check_objective(base, data_dir)
    check_fits(cfg, base)
    if base.distributed.workers > 1 and cfg.resources.fan_out > 1:
        raise XstiltsError("resources.fan_out and distributed.workers > 1 do not combine",
                           "a trial either fans its targets out or runs each on several workers: set one of them to 1")
    check_pipeline(base, tuple(cfg.candidates))
    check_server(uri)
    check_resume(cfg, resume)
    if address or os.environ.get("RAY_ADDRESS"):
        check_address(address or os.environ["RAY_ADDRESS"])


def check_resume(cfg: SearchConfig, resume: bool) -> None:
    """--resume needs a search to resume, with the same search space; a new search must not reuse a name."""
    root = search_dir(cfg)
    state = root / "search.json"
    if not resume:
        if state.exists():
            raise XstiltsError(f"a search named {cfg.name!r} already exists in {root}",
                               "continue it with --resume, or start another with name=<new name>")
        return
    if not state.exists() or not (root / "ray").is_dir():
        raise XstiltsError(f"nothing to resume: no search named {cfg.name!r} in {root.parent}",
                           "run the search without --resume (or give the storage and name it ran with)")
    saved = json.loads(state.read_text()).get("config")
    if saved:
        keys = ("candidates", "weight", "temperature", "intermediate_lr", "target_lr", "steps", "points_to_evaluate",
                "pipeline", "overrides", "repeats", "scheduler", "num_samples", "objectives", "finalists")
        now = json.loads(json.dumps(cfg.model_dump(), default=str))
        changed = [k for k in keys if saved.get(k) != now.get(k)]
        if changed:
            raise XstiltsError(f"search {cfg.name!r} ran with another search space or pipeline ({', '.join(changed)} "
                               f"changed)", "resume with the settings it started with, or start a new search (name=...)")


def check_address(address: str, timeout: float = 10.0) -> None:
    """A Ray address must accept a connection within `timeout` seconds (ray.init would wait much longer)."""
    import socket

    if address in ("auto", "local") or address.startswith("ray://"):
        host_port = address[len("ray://"):] if address.startswith("ray://") else None
        if host_port is None:
            return
    else:
        host_port = address
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise XstiltsError(f"no Ray cluster answers at {address} ({type(exc).__name__})",
                           "start it (`ray start --head`), fix --address / RAY_ADDRESS, or leave both unset for a "
                           "local Ray") from None


def run_search(cfg: SearchConfig, resume: bool = False, address: str | None = None,
               json_path: str | None = None, console: Console | None = None) -> dict:
    console = console or Console()
    if cfg.proxy:
        raise XstiltsError("a search with proxy: is two searches (search/proxy.py run_proxy_search)",
                           "run it with `xstilts search`, which runs both stages")
    started = time.time()
    root = search_dir(cfg)
    base = base_config(cfg)
    uri = cfg.tracking_uri or base.tracking.uri or default_uri()
    preflight(cfg, base, uri, resume, address)  # everything refusable is refused here: nothing written yet
    from trainables.pipeline import base_model, ensure_toy_data

    env = {**forwarded_env(cfg.env), **OFFLINE}  # trials never read the Hub: the driver prepares what they need
    libraries_log_to(None)  # (held until the search folder exists)
    init_ray(address, env)
    libraries_log_to(None)
    check_resources(cfg, base.distributed.workers)
    if not cfg.replay:  # replayed trials (search/replay.py) read a record: no data, no model
        ensure_toy_data(base, console.print)
        base, _ = search_data(cfg, base, console.print)
    if len([n for n in ray.nodes() if n.get("Alive")]) > 1:  # every node sees the driver's files and settings
        nodes = check_nodes({"storage": cfg.storage, "cache": base.cache_dir, "data": base.data_dir}, sorted(env))
        console.print(f"{nodes} nodes see storage, cache and data as the driver does; forwarded to trials: "
                      f"{', '.join(sorted(env)) or 'nothing'}")
    root.mkdir(parents=True, exist_ok=True)
    libraries_log_to(root / "ray-driver.log")
    if base.model.name == "toy" and not cfg.replay:  # phase 1 once, in the driver, before trials race to build it
        base_model(base, Path(base.data_dir) if base.data_dir else None, console.print)
    parent = parent_run(cfg, uri, resume)
    ctx = trial_context(cfg, base, uri)
    # (a restored Tuner runs the copy pickled at the search's start; it takes this driver's store and parent run)
    tracking = TrackTrials.driver = TrackTrials(uri, cfg.experiment_name, parent.run_id, cfg.name, context_tags())
    callbacks = [LiveTable(list(cfg.candidates), ctx.n_rungs), tracking]
    if base.distributed.workers > 1:
        from search.distributed import RemoveTrainPlacementGroups

        callbacks.append(RemoveTrainPlacementGroups(Path(ctx.registry)))
    tuner = build_tuner(cfg, ctx, resume, callbacks)
    name_objectives(cfg)  # the study exists once the searcher is built
    fit_started = time.time()
    TrackTrials.active = None
    results = tuner.fit()
    tracking = TrackTrials.active or tracking  # a restored Tuner ran its own copy, with the saved queue
    zombies = settle_study(cfg, results, ctx.n_rungs)
    finals = run_finalists(cfg, ctx, results, console.print, tracking) if cfg.defers_test else None
    tracking.finish(failed=failed_trials(cfg))
    TrackTrials.driver = TrackTrials.active = None  # (a later search in this process makes its own)
    summary = build_summary(cfg, uri, parent.run_id, errors=results.num_errors, zombies=zombies,
                            finalists=finals["numbers"] if finals else None)
    summary["timing"] = {"total_s": time.time() - started, "fit_s": time.time() - fit_started}
    _write(root / "summary.json", summary)
    if json_path:
        _write(Path(json_path), summary)
    parent.log_dict(summary, "summary.json")
    table_console = Console(record=True, width=160, file=open(os.devnull, "w"))
    table_console.print(summary_table(summary, top=len(summary["trials"])))
    parent.log_text(table_console.export_text(), "summary_table.txt")
    best = summary["best"]
    if best:
        parent.log_metrics({f"best/{k}": best[k] for k in ("average", "test_average", "xtreme") if best.get(k) is not None})
    parent.close()
    out = console if console.is_terminal else Console(width=200)  # piped: don't squeeze the table into 80 columns
    out.print(summary_table(summary))
    out.print(f"wrote: search {root} (summary.json, ray/, ray-driver.log; Optuna study in {mask(optuna_storage(cfg))}); cache "
              f"{base.cache_dir}; MLflow experiment {cfg.experiment_name!r} in {mask(uri)}")
    if results.num_errors:
        what, fix = first_error(results)
        raise XstiltsError(f"{results.num_errors} of {len(results)} trials failed (after {cfg.max_failures} "
                           f"retries each); the first: {what}",
                           fix or "fix the cause, then `xstilts search ... --resume` reruns them from their checkpoints")
    if finals:
        check_finalists(finals)
    return summary


def first_error(results) -> tuple[str, str | None]:
    """The first failed trial's error, one line: (what, fix) of an XstiltsError, else (last line, None)."""
    for result in results:
        if result.error is None:
            continue
        lines = [line for line in str(result.error).splitlines() if "XstiltsError:" in line]
        if lines:
            what, _, fix = lines[-1].split("XstiltsError:", 1)[1].strip().partition(" — ")
            return mask(what), mask(fix) or None
        return mask(str(result.error).strip().splitlines()[-1]), None
    return "unknown", None


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.rename(path)
