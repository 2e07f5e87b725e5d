"""Benchmark: the real search driver at cluster scale — 1,000 trials, 64 at a time — on one small machine.

`xstilts search`'s own driver runs unchanged (`search.run.run_search`: Tune with the Optuna study searcher on SQLite, the
`SeededASHA` scheduler, the live table, `TrackTrials` writing every trial's MLflow run, `settle_study`, the summary and its MLflow logging, into
a SQLite tracking store under a temporary folder); only the trials differ: with the search config key
`replay: {record, time_scale}` each trial replays the recorded toy grid (benchmarks/records/toy_grid.json,
search/replay.py) — per rung it sleeps the recorded wall time x `--time-scale` and reports the recorded
metrics, with the real trainable's MLflow run, checkpointed state and Tune reports. Ray runs in-process with
`--concurrent` *logical* CPUs (one per trial), a 100 MB object store, no dashboard; trials reuse their actors.
The toy search preset supplies everything else (candidates, lr range, the two seeded points, ASHA grace 1,
reduction factor 2).

Run:  python benchmarks/driver_scale.py --time-scale 0.8 --json out.json     (1,000 trials, 64 at a time; on 2
                       shared cores 12-17 minutes and ~14 GB of memory; nothing else may `ray stop` meanwhile)
      python benchmarks/driver_scale.py --trials 100 --time-scale 0.5 --json out.json
      python benchmarks/driver_scale.py --trials 300 --profile driver.txt    (py-spy's view of the driver)
      python benchmarks/driver_scale.py --components 100 300 1000            (the driver's own pieces, no Ray)

Output (`--json FILE`; also printed):
  trials, concurrent, time_scale
  wall_s               the search's wall time on the driver, from `Tuner.fit()` to `run_search` returning: every
                       trial, closing their MLflow runs, settling the Optuna study, the summary and its logging.
                       Ray's start and the search's preflight are `setup_s`, outside it.
  ideal_s              the same trials with zero overhead: each trial lasts the scaled recorded time of the
                       rungs it actually ran (read back from Optuna: its last reported rung), placed by a greedy
                       list schedule in trial order on `concurrent` slots (a trial starts when the earliest slot
                       frees) — what Tune's ConcurrencyLimiter would achieve if nothing else took time.
                       `ideal_lower_bound_s` = max(total / concurrent, longest trial), a bound no schedule beats.
  overhead_ratio       wall_s / ideal_s  (Ray Tune's own release test: 10,000 trials, 715 s vs 625 s ideal, 1.14x)
  startup_s            from fit() until the last of the first `concurrent` trials had started (`pids/`): each
                       trial process boots Ray's worker and imports Tune, the trainable and MLflow (~5 CPU-seconds);
                       on a cluster they start in parallel on their own nodes, here 64 of them queue for 2 cores.
  ideal_given_startup_s / overhead_ratio_after_startup   the same list schedule with slot i free only from when
                       the i-th of those trials started: what is left is the overhead once the processes are up.
  per_trial_driver_ms  (wall_s - ideal_s) / trials x 1000: the time each trial adds beyond its replayed rungs
                       (driver, Ray, MLflow, Optuna together; on 2 cores the 64 trial processes share the driver's CPUs)
  peak_rss_gb          peak of the summed resident set sizes of the driver process and every process under it
                       (Ray's GCS, raylet, agents and the trial workers), sampled every second with psutil; shared
                       pages count once per process, so this overstates physical memory. `driver_peak_rss_gb`: the
                       driver alone.
  driver_cpu_s, driver_cpu_ms_per_trial   CPU the driver process used during wall_s (and per trial)
  cpu_s                CPU seconds since Ray's start by process kind: driver, trials (Ray's worker processes) and
                       each of Ray's own; other_cpu_s: the rest of the machine during wall_s (someone else's load)
  phases_s             fit (Tune), tracking (closing MLflow runs left open), settle (settle_study), summary
                       (build_summary), and the rest of run_search after fit (writes, the summary's MLflow logging)
  states, pruned       Optuna's verdicts (every trial must be COMPLETE or PRUNED); best: the summary's best trial
                       and the best recorded value among the configurations that trials ran to the last rung
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RECORD = ROOT / "benchmarks" / "records" / "toy_grid.json"


class PeakRSS(threading.Thread):
    """Samples the RSS of this process and all its descendants (Ray's processes) every `every` seconds."""

    def __init__(self, every: float = 1.0):
        super().__init__(daemon=True)
        import psutil  # Ray ships it (ray/thirdparty_files), importable once ray is imported

        self.proc, self.every, self.stop = psutil.Process(), every, threading.Event()
        self.peak = self.driver_peak = 0
        self.peak_processes = 0
        self.cpu: dict[int, tuple[str, float]] = {}  # pid -> (kind, user + system seconds when last seen)

    def sample(self) -> None:
        import psutil

        total, count = 0, 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
                count += 1
                kind = self.cpu[p.pid][0] if p.pid in self.cpu else self.kind(p)
                self.cpu[p.pid] = (kind, sum(p.cpu_times()[:2]))
            except psutil.Error:
                pass
        driver = self.proc.memory_info().rss
        self.driver_peak = max(self.driver_peak, driver)
        if total > self.peak:
            self.peak, self.peak_processes = total, count

    def kind(self, p) -> str:
        """driver | trials (Ray worker processes: the trials' actors) | the name of one of Ray's own processes."""
        if p.pid == self.proc.pid:
            return "driver"
        cmd = " ".join(p.cmdline())
        if "default_worker.py" in cmd:
            return "trials"
        return "ray:" + next((n for n in ("gcs_server", "raylet", "dashboard", "runtime_env", "log_monitor", "monitor")
                              if n in cmd), p.name())

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.sample()


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all processes, anyone's)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def cpu_by_kind(cpu: dict) -> dict[str, float]:
    """CPU seconds (user + system) of the driver, the trial workers and Ray's own processes, as last sampled
    (from Ray's start; a process's last second before it exited is missed)."""
    out: dict[str, float] = {}
    for kind, seconds in list(cpu.values()):
        out[kind] = round(out.get(kind, 0.0) + seconds, 1)
    return out


def list_schedule(durations: list[float], slots: int, ready: list[float] | None = None) -> float:
    """Makespan of a greedy list schedule: each task, in order, starts on the slot that frees first (slot i is
    free from `ready[i]`, default 0)."""
    free = sorted(ready) if ready else [0.0] * slots
    free += [0.0] * (slots - len(free))
    heapq.heapify(free)
    end = 0.0
    for d in durations:
        start = heapq.heappop(free)
        heapq.heappush(free, start + d)
        end = max(end, start + d)
    return end


def run_starts(uri: str, experiment: str, since: float, pids: Path) -> dict[int, float]:
    """Seconds from `since` until each trial's attempt started (its process up, its imports done: the `started` of
    its `<search>/pids/<trial id>` record), by Optuna trial number (from its MLflow run's tags)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=50000)
    numbers = {r.data.tags.get("ray.trial_id"): int(r.data.tags["optuna.trial"]) for r in runs
               if r.data.tags.get("optuna.trial", "").isdigit()}
    out = {}
    for f in pids.glob("[!.]*") if pids.is_dir() else []:
        started = json.loads(f.read_text()).get("started")
        if started and f.name in numbers:
            out[numbers[f.name]] = started - since
    return out


def trial_durations(cfg, base) -> tuple[list[float], dict, list[float]]:
    """Per Optuna trial (in number order): the scaled recorded time of the rungs it ran; Optuna's verdicts;
    the recorded final value of every trial that ran all rungs."""
    import optuna

    from search.replay import load_record, nearest
    from search.space import TrialSpec
    from search.tuner import optuna_storage

    data = load_record(cfg.replay.record)
    study = optuna.load_study(study_name=cfg.name, storage=optuna_storage(cfg))
    durations, states, finals = [], {}, []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        states[t.state.name] = states.get(t.state.name, 0) + 1
        config = nearest(data, TrialSpec.from_params(t.params, cfg.candidates), base.intermediate.lr)
        ran = max(t.intermediate_values, default=0)
        durations.append(config["elapsed_s"][ran - 1] * cfg.replay.time_scale if ran else 0.0)
        if t.state.name == "COMPLETE":
            finals.append(config["final"])
    return durations, states, finals


def run(trials: int, concurrent: int, time_scale: float, record: Path = RECORD, keep: Path | None = None,
        quiet: bool = True) -> dict:
    work = Path(tempfile.mkdtemp(prefix="xstilts-driver-scale-"))
    os.environ["XSTILTS_HOME"] = str(work)  # storage, caches, the tracking store: all under `work`
    import ray
    from rich.console import Console

    import search.run as driver
    from search.config import load_search_config
    from search.tuner import base_config

    phases: dict[str, float] = {}

    def timed(name, fn):
        def inner(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0
        return inner

    marks: dict[str, float] = {}
    real_build = driver.build_tuner

    def build_tuner(*a, **kw):  # times fit() of the tuner the driver builds, nothing else changes
        tuner = real_build(*a, **kw)
        fit = tuner.fit

        def timed_fit():
            marks["fit_start"], marks["fit_start_wall"] = time.perf_counter(), time.time()
            marks["cpu_start"] = sum(memory.proc.cpu_times()[:2])
            marks["machine_cpu_start"], marks["ours_cpu_start"] = machine_busy_s(), sum(c for _, c in list(memory.cpu.values()))
            try:
                return fit()
            finally:
                phases["fit"] = time.perf_counter() - marks["fit_start"]
        tuner.fit = timed_fit
        return tuner

    from search.tracking import TrackTrials

    originals = {n: getattr(driver, n) for n in ("build_tuner", "settle_study", "build_summary")}
    finish = TrackTrials.finish
    TrackTrials.finish = timed("tracking", finish)
    driver.build_tuner = build_tuner
    driver.settle_study = timed("settle", originals["settle_study"])
    driver.build_summary = timed("summary", originals["build_summary"])
    uri = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
    cfg = load_search_config("toy", [f"name=scale-{trials}", f"num_samples={trials}",
                                     f"max_concurrent_trials={concurrent}", f"tracking_uri={uri}",
                                     f"replay={{record: {record}, time_scale: {time_scale}}}"])
    memory = None
    log = open(work / "driver-console.log", "w") if quiet else None
    started = time.perf_counter()
    try:
        ray.init(address="local", num_cpus=concurrent, include_dashboard=False, log_to_driver=False,
                 object_store_memory=100 * 1024 ** 2)
        memory = PeakRSS()
        memory.start()
        console = Console(file=log, width=200) if log else Console()
        stdout = sys.stdout
        if log:
            sys.stdout = log  # the live table's lines (one per trial event) go to the log, not the terminal
        try:
            summary = driver.run_search(cfg, console=console)
        finally:
            sys.stdout = stdout
        ended = time.perf_counter()
        memory.stop.set()
        memory.join()
        memory.sample()
        marks["cpu_end"] = sum(memory.proc.cpu_times()[:2])
        marks["machine_cpu_end"], marks["ours_cpu_end"] = machine_busy_s(), sum(c for _, c in list(memory.cpu.values()))
    finally:
        memory and memory.stop.set()
        for name, fn in originals.items():
            setattr(driver, name, fn)
        TrackTrials.finish = finish
        ray.shutdown()
        if log:
            log.close()
    base = base_config(cfg)
    durations, states, finals = trial_durations(cfg, base)
    wall = ended - marks["fit_start"]
    ideal = list_schedule(durations, concurrent)
    starts = run_starts(uri, cfg.experiment_name, marks["fit_start_wall"], work / "runs" / "searches" / cfg.name / "pids")
    slots = sorted(starts.get(n, 0.0) for n in range(min(concurrent, trials)))
    startup = slots[-1] if slots else 0.0
    ideal_after = list_schedule(durations, concurrent, slots)
    phases["after_fit_other"] = wall - sum(phases.get(k, 0.0) for k in ("fit", "tracking", "settle", "summary"))
    best = summary["best"] or {}
    out = {"trials": trials, "concurrent": concurrent, "wall_s": round(wall, 2), "ideal_s": round(ideal, 2),
           "overhead_ratio": round(wall / ideal, 3) if ideal else None,
           "per_trial_driver_ms": round((wall - ideal) / trials * 1000, 1),
           "peak_rss_gb": round(memory.peak / 1024 ** 3, 2),
           "time_scale": time_scale, "ideal_lower_bound_s": round(max(sum(durations) / concurrent, max(durations)), 2),
           "startup_s": round(startup, 2), "ideal_given_startup_s": round(ideal_after, 2),
           "overhead_ratio_after_startup": round(wall / ideal_after, 3) if ideal_after else None,
           "driver_cpu_s": round(marks["cpu_end"] - marks["cpu_start"], 1),
           "driver_cpu_ms_per_trial": round((marks["cpu_end"] - marks["cpu_start"]) / trials * 1000, 1),
           "cpu_s": cpu_by_kind(memory.cpu),
           "other_cpu_s": round((marks["machine_cpu_end"] - marks["machine_cpu_start"])
                                - (marks["ours_cpu_end"] - marks["ours_cpu_start"]), 1),
           "setup_s": round(marks["fit_start"] - started, 2), "phases_s": {k: round(v, 2) for k, v in phases.items()},
           "driver_peak_rss_gb": round(memory.driver_peak / 1024 ** 3, 2), "processes_at_peak": memory.peak_processes,
           "states": states, "pruned": states.get("PRUNED", 0), "summary_trials": len(summary["trials"]),
           "errors": summary.get("errors"),
           "best": {"number": best.get("number"), "average": best.get("average"), "mixture": best.get("mixture"),
                    "record_best_reached": max(finals) if finals else None},
           "search_dir": str(work / "runs" / "searches" / cfg.name)}
    if keep:
        shutil.copytree(work, keep, dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------ the driver's own pieces
def components(sizes: list[int]) -> dict:
    """Milliseconds per event of the driver's own per-trial code with `n` trials behind it (synthetic events,
    the real objects, no Ray): the live table on a terminal (start, 2 results, completion per trial, 64 running),
    SeededASHA's result handling with its records file, TrackTrials writing a trial's rung and close to its run
    among `n` in SQLite (found by Ray trial id, as after a restore), and the
    searcher's look-up of Optuna trials a crash left RUNNING. Flat across sizes = linear over a search."""
    import random
    from types import SimpleNamespace

    import optuna
    from mlflow import MlflowClient
    from rich.console import Console

    from search.config import load_search_config
    from search.run import LiveTable
    from ray import tune

    from search.tracking import TRACKING, TrackTrials
    from search.space import define_space
    from search.trainable import METRIC
    from search.asha import SeededASHA
    from search.searcher import StudySearcher

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def live(n, tmp):
        table = LiveTable(["mnli", "qqp", "squad_v1", "sst2"], max_t=9)
        table._console = Console(file=open(os.devnull, "w"), force_terminal=True, width=160)
        running, events, t0 = [], 0, time.perf_counter()
        for i in range(n):
            trial = SimpleNamespace(trial_id=f"t{i}", last_result={},
                                    config={"optuna_trial": i, "use_mnli": True, "w_mnli": 0.5, "use_qqp": i % 2 == 0,
                                            "w_qqp": 0.3})
            table.on_trial_start(0, [], trial)
            running.append(trial)
            events += 1
            if len(running) > 64:
                old = running.pop(0)
                for rung in (1, 2):
                    table.on_trial_result(0, [], old, {METRIC: 50.0 + rung + i / n})
                old.last_result = {"training_iteration": 2, METRIC: 52.0}
                table.on_trial_complete(0, [], old)
                table.on_step_end(0, [])
                events += 3
        table.on_experiment_end([])
        return (time.perf_counter() - t0) / events * 1000

    def asha(n, tmp):
        sched = SeededASHA(time_attr="training_iteration", metric=METRIC, mode="max", max_t=9, grace_period=1,
                           reduction_factor=2, records=str(tmp / "asha.json"))
        rng, events, t0 = random.Random(0), 0, time.perf_counter()
        for i in range(n):
            trial = SimpleNamespace(trial_id=f"t{i}", config={"optuna_trial": i, **({"seeded": True} if i < 2 else {})})
            sched.on_trial_add(None, trial)
            base = rng.uniform(40, 60)
            for rung in range(1, 10):
                events += 1
                if sched.on_trial_result(None, trial, {"training_iteration": rung, METRIC: base + rung}) == sched.STOP \
                        or rung == 9:
                    sched.on_trial_complete(None, trial, {"training_iteration": rung, METRIC: base + rung})
                    break
        return (time.perf_counter() - t0) / events * 1000

    def track_runs(n, tmp):
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        client = MlflowClient(uri)
        exp = client.create_experiment("exp")
        for i in range(n):
            client.create_run(exp, tags={"ray.trial_id": f"t{i}", "xstilts.search": "s"})
        tracking, k = TrackTrials(uri, "exp", None, "s"), min(n, 50)
        rung = tmp / "checkpoint"  # a rung's checkpoint as a trial writes it (search/trainable.py `_report`)
        rung.mkdir()
        (rung / TRACKING).write_text(json.dumps([["metrics", [[f"target/xnli/l{j}/accuracy", 50.0, 0, 9]
                                                              for j in range(15)]]]))
        checkpoint = tune.Checkpoint.from_directory(str(rung))
        t0 = time.perf_counter()
        for i in range(n - k, n):  # the last 50 trials' final rung and close, with n runs in the store
            trial = SimpleNamespace(trial_id=f"t{i}", config={"optuna_trial": i})
            tracking.on_checkpoint(0, [], trial, checkpoint)
            tracking.on_trial_complete(0, [], trial)
            tracking.send()
        tracking.finish(patience_s=60)
        return (time.perf_counter() - t0) / k * 1000

    def zombies(n, tmp):
        cfg = load_search_config(None, ["candidates=[mnli,qqp,squad_v1,sst2]"])
        make = lambda: StudySearcher(lambda t: define_space(t, cfg), metric=METRIC, mode="max", max_t=9,  # noqa: E731
                                     storage=f"sqlite:///{tmp / 'o.db'}", study_name="s",
                                     sampler=optuna.samplers.RandomSampler(seed=0))
        searcher = make()
        for i in range(n):
            searcher.suggest(f"t{i}")
            if i >= 64:
                searcher.on_trial_complete(f"t{i - 64}", {METRIC: 50.0, "training_iteration": 9})
        searcher.save(str(tmp / "searcher.pkl"))
        t0 = time.perf_counter()
        for _ in range(5):  # a restored searcher's first look at the study (64 running, none a zombie)
            again = make()
            again.restore(str(tmp / "searcher.pkl"))
            again.study
        return (time.perf_counter() - t0) / 5 * 1000

    out: dict = {}
    for name, fn in (("live_table", live), ("seeded_asha", asha), ("track_runs", track_runs),
                     ("zombie_lookup", zombies)):
        for n in sizes:
            with tempfile.TemporaryDirectory() as d:
                out.setdefault(name, {})[n] = round(fn(n, Path(d)), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--concurrent", type=int, default=64)
    ap.add_argument("--time-scale", type=float, default=1.0, help="replayed rung time = recorded x this")
    ap.add_argument("--record", type=Path, default=RECORD)
    ap.add_argument("--keep", type=Path, help="copy the search folder and tracking store here")
    ap.add_argument("--profile", type=Path, help="py-spy the driver; write its top frames here")
    ap.add_argument("--components", type=int, nargs="+", metavar="N",
                    help="instead: ms per event of the driver's own pieces with N trials behind them")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.components:
        out = {"ms_per_event": components(args.components)}
        print(json.dumps(out, indent=1))
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
        return
    profiler = None
    if args.profile:
        import subprocess

        raw = args.profile.with_suffix(".collapsed")
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))  # pip install py-spy
        profiler = subprocess.Popen([spy, "record", "--pid", str(os.getpid()), "--rate", "20", "--format", "raw",
                                     "--output", str(raw), "--nonblocking"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    out = run(args.trials, args.concurrent, args.time_scale, args.record.resolve(), args.keep)
    if profiler:
        import signal

        profiler.send_signal(signal.SIGINT)
        profiler.wait(60)
        args.profile.write_text(top_frames(args.profile.with_suffix(".collapsed")))
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


def top_frames(collapsed: Path, n: int = 40) -> str:
    """Inclusive sample counts per function, from py-spy's collapsed stacks (a frame counts once per stack)."""
    counts: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, k = line.rpartition(" ")
        total += int(k)
        for frame in set(stack.split(";")):
            counts[frame] = counts.get(frame, 0) + int(k)
    rows = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return f"{total} samples\n" + "\n".join(f"{100 * k / total:6.1f}%  {f}" for f, k in rows) + "\n"


if __name__ == "__main__":
    main()
