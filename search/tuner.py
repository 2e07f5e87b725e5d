"""Launch (or resume) a search: Ray Tune + an Optuna study (TPE, search/searcher.py) + ASHA (search/asha.py),
tracked in MLflow.

Objectives: the validation average, or with `objectives: [average, cost]` also the trial's accelerator-hours
(Optuna's multi-objective TPE; ASHA still stops on the average; Optuna keeps no per-rung history then).

Everything a search keeps lives under `<storage>/<name>/`: Ray's experiment (`ray/<name>/`), the Optuna study
(`optuna.db`, open it with `optuna-dashboard sqlite:///<storage>/<name>/optuna.db`), `search.json` (the
parent MLflow run) and `summary.json`.

Traps handled (shared/reference/ecosystem.md): the searcher holds metric/mode itself; trials ASHA stopped
reach Optuna as PRUNED, not COMPLETE; Optuna trials a crash left RUNNING are told FAIL and their parameters
enqueued again on resume (the history shows the crash); a multi-node cluster with a driver-only tracking store
is refused; `address="local"` unless an address is given, so a laptop never joins a stranger's cluster.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from search.asha import SeededASHA
from search.config import SearchConfig
from search.searcher import StudySearcher, Study
from search.space import TrialSpec, define_space
from search.trainable import METRIC, TrialContext, run_trial
from trainables.config import PipelineConfig, load_config, update
from trainables.errors import XstiltsError
from trainables.tasks import TARGETS, TASKS
from trainables.tracking import MlflowTracker, mask


def search_dir(cfg: SearchConfig) -> Path:
    return (Path(cfg.storage) / cfg.name).resolve()


def optuna_storage(cfg: SearchConfig) -> str:
    return cfg.optuna_storage or f"sqlite:///{search_dir(cfg) / 'optuna.db'}"


def init_ray(address: str | None, env: dict[str, str] | None = None) -> None:
    """Join `address` (or RAY_ADDRESS), else start a private local Ray. `env`: variables every task and actor of
    this job gets on every node (Ray's runtime_env; a node's own environment is not the driver's)."""
    # Ray's "snapshotting may become a bottleneck" warning only fires with CheckpointConfig(num_to_keep), which
    # build_tuner no longer sets (that forced snapshot was the bottleneck); kept off for restored older searches.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's console output (the configuration box, "View detailed results", the TensorBoard hint): off. The
    # search prints its own live table; the older output engine prints nothing at verbose=0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": dict(env)} if env else None
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
    else:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 object_store_memory=200 * 1024 ** 2, runtime_env=runtime_env)


def base_config(cfg: SearchConfig) -> PipelineConfig:
    """The trial's pipeline preset, validated, with paths made absolute (trials run in other folders, on other
    nodes): the search's `data_dir`/`cache_dir` when set, else the preset's with relative paths under the search's
    storage — so by default everything a search computes lives on the storage every node shares."""
    from trainables.presets import under_home

    overrides = list(cfg.overrides) + [f"{k}={under_home(v)}" for k, v in (("data_dir", cfg.data_dir),
                                                                          ("cache_dir", cfg.cache_dir)) if v is not None]
    pcfg = load_config(cfg.pipeline, overrides, home=Path(cfg.storage))
    return update(pcfg, {"data_dir": str(Path(pcfg.data_dir).resolve()) if pcfg.data_dir else None,
                         "cache_dir": str(Path(pcfg.cache_dir).resolve()), "progress": False,
                         "tracking": {"enabled": False}})  # the trainable owns the trial's run


def check_objective(base: PipelineConfig, data_dir: Path | None = None) -> None:
    """The objective is the validation average: at least one target must have a validation split. With the
    data_dir the trials will read (None: not checked), no target may enter it through a gold-only dev set (BUCC
    without its sample corpora: google/xtreme's gold pairs, mining among which is trivial)."""
    if not any(TASKS[t].has_validation for t in base.targets):
        raise XstiltsError(f"targets {base.targets} have no validation split, so the search has no objective — add "
                           f"one of {', '.join(t for t in TARGETS if TASKS[t].has_validation)}")
    if data_dir is None:
        return
    from trainables.data import gold_only_languages

    for t in (t for t in base.targets if TASKS[t].has_validation):
        langs = gold_only_languages(t, "validation", data_dir)
        if langs:
            rest = ",".join(x for x in base.targets if x != t)
            raise XstiltsError(
                f"the search objective would score {t} on a gold-only dev set ({' '.join(langs)}: google/xtreme's gold "
                f"pairs, no distractors): BUCC 2018's sample corpora are not under {data_dir}/bucc2018/",
                f"put them there (`xstilts tasks --json`: {t}'s local_only source says where to download them), or "
                f"drop {t} from the targets: overrides: [\"targets=[{rest}]\"]")


def trial_context(cfg: SearchConfig, base: PipelineConfig, uri: str | None) -> TrialContext:
    """What every trial gets; its pipeline defers test work to the finalists when the search has some that are
    not (search/finalists.py)."""
    base = update(base, {"defer_test": cfg.defers_test})
    return TrialContext(name=cfg.name, base=base, candidates=tuple(cfg.candidates), tracks=bool(uri),
                        seed=base.seed, repeats=cfg.repeats,
                        cpu=cfg.resources.cpu, gpu=cfg.resources.gpu, fan_out=cfg.resources.fan_out,
                        train_storage=str(Path(base.cache_dir) / "ray-train"),
                        registry=str(search_dir(cfg) / "train-pgs"), max_failures=cfg.max_failures,
                        search_dir=str(search_dir(cfg)))


def parent_run(cfg: SearchConfig, uri: str, resume: bool) -> MlflowTracker:
    state = search_dir(cfg) / "search.json"
    run_id = json.loads(state.read_text())["parent_run_id"] if resume and state.exists() else None
    tracker = MlflowTracker(uri, cfg.experiment_name, f"search-{cfg.name}", run_id=run_id,
                            tags={"xstilts.search": cfg.name, "xstilts.role": "search"})
    if run_id is None:
        tracker.log_params({"search/" + k: v for k, v in cfg.model_dump().items()})  # masked by the tracker
        state.write_text(json.dumps(mask({"parent_run_id": tracker.run_id, "tracking_uri": uri,
                                          "experiment": cfg.experiment_name, "config": cfg.model_dump()})))
    return tracker


DRIVER_CPU = 0.5  # a trial whose jobs run on Ray Train workers only drives them


def trial_resources(cfg: SearchConfig, workers: int = 1) -> tune.PlacementGroupFactory:
    """One bundle for the trial itself, plus `fan_out` bundles for its parallel target fine-tunes. With
    Ray Train workers (`distributed.workers > 1`) the trial is a driver with a small CPU bundle; its workers
    request `resources.cpu`/`gpu` each when a job starts (Ray's guidance for Train inside Tune)."""
    if workers > 1:
        return tune.PlacementGroupFactory([{"CPU": DRIVER_CPU}])
    bundle = {"CPU": cfg.resources.cpu, **({"GPU": cfg.resources.gpu} if cfg.resources.gpu else {})}
    extra = cfg.resources.fan_out if cfg.resources.fan_out > 1 else 0
    return tune.PlacementGroupFactory([bundle] * (1 + extra), strategy="PACK")


def trial_needs(cfg: SearchConfig, workers: int) -> dict[str, float]:
    """Everything one trial holds at once, its Train workers included."""
    need: dict[str, float] = {}
    for bundle in trial_resources(cfg, workers).bundles:
        for key, value in bundle.items():
            need[key] = need.get(key, 0) + value
    if workers > 1:
        need["CPU"] = need.get("CPU", 0) + workers * cfg.resources.cpu
        need["GPU"] = need.get("GPU", 0) + workers * cfg.resources.gpu
    return need


def check_resources(cfg: SearchConfig, workers: int = 1) -> None:
    """Ray leaves a trial that can never be placed PENDING forever; say so up front instead."""
    have = ray.cluster_resources()
    for key, need in trial_needs(cfg, workers).items():
        if need > have.get(key, 0):
            raise XstiltsError(f"one trial needs {need:g} {key} but the Ray cluster has {have.get(key, 0):g} — "
                               f"lower resources.{key.lower()} (or resources.fan_out, distributed.workers), or "
                               f"add nodes")


def concurrency(cfg: SearchConfig, workers: int = 1) -> int:
    """Trials at once: `max_concurrent_trials`, or with null as many as the Ray cluster's resources hold (a
    cluster of 11 GPUs runs the paper grid's 11 points together)."""
    if cfg.max_concurrent_trials:
        return cfg.max_concurrent_trials
    have = ray.cluster_resources()
    fits = [int(have.get(key, 0) // need) for key, need in trial_needs(cfg, workers).items() if need > 0]
    return max(1, min(fits, default=1))


def check_fits(cfg: SearchConfig, base: PipelineConfig) -> None:
    """Refuse, before anything starts, a trial that cannot fit the GPUs it asks for (`xstilts plan`)."""
    if not cfg.resources.gpu or not cfg.resources.gpu_memory_gb:
        return
    from trainables.plan import plan

    gpus = max(1, base.distributed.workers)
    result = plan(base, gpus, cfg.resources.gpu_memory_gb * min(1.0, cfg.resources.gpu))
    if not result["fits"]:
        sug = result["suggestion"] or {}
        fix = " ".join(sug.get("overrides", [])) or sug.get("reason", "use more or larger GPUs")
        raise XstiltsError(f"a {base.model.name} trial needs {result['per_gpu_gb']:.1f} GB per GPU on {gpus} GPU(s) "
                           f"but has {cfg.resources.gpu_memory_gb * min(1.0, cfg.resources.gpu):g} GB — set {fix} "
                           f"in the pipeline overrides (see `xstilts plan`)")


def experiment_dir(cfg: SearchConfig) -> Path:
    """Ray Tune's experiment folder, named after the search (what Ray's own tools and TensorBoard show):
    `<search>/ray/<name>/<trial id>/`. A search started before this layout resumes from `<search>/ray`."""
    old = search_dir(cfg) / "ray"
    return old if (old / "tuner.pkl").exists() else old / cfg.name


def reuse_processes(cfg: SearchConfig, workers: int = 1) -> bool:
    """Whether a trial's process runs the next trial too (Tune's `reuse_actors`). A new process costs a Python
    start and the imports of torch and transformers, several CPU-seconds per trial, which on the toy search's two
    cores is a large share of the whole. Trials on GPUs get fresh processes (a reused one keeps its CUDA context
    and cached blocks), as do trials driving Ray Train workers; replayed trials hold nothing. Results do not
    depend on it: every phase seeds itself (trainables/train.py `set_seed`), and system metrics start afresh per
    trial (trainables/sysmetrics.py)."""
    return cfg.replay is not None or (not cfg.resources.gpu and workers <= 1)


def build_tuner(cfg: SearchConfig, ctx: TrialContext, resume: bool, callbacks: list) -> tune.Tuner:
    workers = ctx.base.distributed.workers
    check_resources(cfg, workers)
    fn, kwargs = run_trial, {"ctx": ctx}
    if cfg.replay:  # nothing trains: trials replay a recorded grid (search/replay.py, benchmarks/driver_scale.py)
        from search.replay import check_record, replay_trial as fn

        check_record(cfg.replay, ctx)
        kwargs["replay"] = cfg.replay
    trainable = tune.with_resources(tune.with_parameters(fn, **kwargs), trial_resources(cfg, workers))
    exp_dir = experiment_dir(cfg)
    if resume and tune.Tuner.can_restore(str(exp_dir)):
        try:
            # the journal and the study where the search folder is now (it may have moved since it started)
            with SeededASHA.records_at(search_dir(cfg) / "asha.json"), StudySearcher.study_at(optuna_storage(cfg)):
                return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_errored=True)
        except (AttributeError, ModuleNotFoundError) as exc:  # pickled by an older xstilts: classes it no longer has
            raise XstiltsError(f"search {cfg.name!r} was started by an older xstilts whose searcher this one cannot "
                               f"restore ({exc})", "finish it with the version that started it, or start it anew "
                               "under another name") from exc
    # (a resume whose driver died before Ray saved its experiment starts afresh, below: its trials are new, so an
    # ASHA journal of the dead driver's trials is set aside, kept, not read)
    journal = search_dir(cfg) / "asha.json"
    if journal.exists():
        journal.rename(journal.with_name(f"asha-before-{int(journal.stat().st_mtime)}.json"))
    max_t = ctx.n_rungs
    points = [TrialSpec(mixture=p).to_params(cfg.candidates) for p in cfg.points_to_evaluate]
    metric, mode = objectives(cfg)
    searcher = StudySearcher(
        functools.partial(define_space, cfg=cfg), metric=metric, mode=mode, max_t=max_t,
        points_to_evaluate=points, sampler=tpe_sampler(cfg.seed, cfg.num_samples),
        storage=optuna_storage(cfg), study_name=cfg.name)
    scheduler = (SeededASHA(time_attr="training_iteration", max_t=max_t, grace_period=min(cfg.scheduler.grace_period, max_t),
                            reduction_factor=cfg.scheduler.reduction_factor, records=str(search_dir(cfg) / "asha.json"),
                            protect=cfg.scheduler.protect_seeded)
                 if cfg.scheduler.enabled and max_t > 1 else FIFOScheduler())
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, metric=METRIC, mode="max",
                                    num_samples=cfg.num_samples, max_concurrent_trials=concurrency(cfg, workers),
                                    trial_dirname_creator=lambda t: t.trial_id,
                                    reuse_actors=reuse_processes(cfg, workers)),
        run_config=tune.RunConfig(name=exp_dir.name, storage_path=str(exp_dir.parent), verbose=0, callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                                  # Every checkpoint is kept: each is one state.json (the models live in the cache).
                                  # num_to_keep=1 made Tune snapshot the whole experiment (every trial's state, the
                                  # searcher, all result files copied) at every rung of every trial: the driver's
                                  # time per trial grew with the number of trials (benchmarks/driver_scale.py).
                                  checkpoint_config=tune.CheckpointConfig()))


def objectives(cfg: SearchConfig) -> tuple[str | list[str], str | list[str]]:
    """Optuna's metric(s) and direction(s): the validation average (max), and with `objectives: [average, cost]`
    the trial's accelerator-hours (min) too. Tune's own metric (ASHA, best result) stays the average."""
    if cfg.multi_objective:
        return [METRIC, cfg.cost_metric], ["max", "min"]
    return METRIC, "max"


def name_objectives(cfg: SearchConfig) -> None:
    """The study's objectives by name (optuna-dashboard and `study.trials_dataframe()` show them instead of
    "Objective 0/1"): the metrics they come from."""
    import warnings

    study = optuna.load_study(study_name=cfg.name, storage=optuna_storage(cfg))
    metric, _ = objectives(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(metric if isinstance(metric, list) else [metric])


def trial_values(cfg: SearchConfig, metrics: dict) -> float | list[float]:
    """What Optuna is told for a finished trial, from its last reported metrics."""
    metric, _ = objectives(cfg)
    return [float(metrics[m]) for m in metric] if isinstance(metric, list) else float(metrics[metric])


def tpe_sampler(seed: int, num_samples: int) -> optuna.samplers.TPESampler:
    """The search's sampler: TPE with a third of the budget (2..10 trials) sampled at random first."""
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, num_samples // 3)))


def failed_trials(cfg: SearchConfig) -> set[int]:
    """The numbers of the study's trials told FAIL (zombies of a crashed driver, retried as new trials)."""
    study = optuna.load_study(study_name=cfg.name, storage=optuna_storage(cfg))
    return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}


def finished_all_rungs(metrics: dict | None, max_t: int) -> bool:
    """Whether a trial that ended reported every rung (DONE), rather than being stopped by ASHA (PRUNED)."""
    metrics = metrics or {}
    return metrics.get("training_iteration", 0) >= max_t and metrics.get(METRIC) is not None


def settle_study(cfg: SearchConfig, results, max_t: int) -> int:
    """After fit(), make the Optuna study agree with Ray's verdicts; returns how many zombies were closed.
    A RUNNING Optuna trial whose Ray trial finished is told COMPLETE (or PRUNED, stopped before the last rung):
    Tune's ConcurrencyLimiter drops the completion of a trial that failed once and was resumed. One with no
    Ray trial is a zombie of a crash: FAIL. One whose Ray trial failed stays RUNNING: `--resume` reruns it."""
    study = optuna.load_study(study_name=cfg.name, storage=optuna_storage(cfg))
    by_number = {r.config.get("optuna_trial"): r for r in results if r.config}
    zombies, handle = 0, None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        result = by_number.get(t.number)
        if result is None:
            study.tell(t.number, state=TrialState.FAIL)
            zombies += 1
        elif result.error is None:
            if finished_all_rungs(result.metrics, max_t):
                step = int(result.metrics["training_iteration"])
                if not cfg.multi_objective:  # the dropped last rung
                    handle = handle or Study(optuna_storage(cfg), cfg.name)
                    handle.report(t.number, step, result.metrics[METRIC])
                study.tell(t.number, trial_values(cfg, result.metrics))
            else:
                step, value = result.metrics.get("training_iteration"), result.metrics.get(METRIC)
                if not cfg.multi_objective and step is not None and value is not None:  # the rung it stopped at
                    handle = handle or Study(optuna_storage(cfg), cfg.name)
                    handle.report(t.number, int(step), value)
                study.tell(t.number, state=TrialState.PRUNED)
    return zombies
