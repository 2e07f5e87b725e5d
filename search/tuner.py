"""Launch (or resume) a search: Ray Tune + OptunaSearch (TPE) + ASHA, tracked in MLflow.

Objectives: the validation average, or with `objectives: [average, cost]` also the trial's accelerator-hours
(Optuna's multi-objective TPE; ASHA still stops on the average; Optuna keeps no per-rung history then).

Everything a search keeps lives under `<storage>/<name>/`: Ray's experiment (`ray/`), the Optuna study
(`optuna.db`, open it with `optuna-dashboard sqlite:///<storage>/<name>/optuna.db`), `search.json` (the
parent MLflow run) and `summary.json`.

Traps handled (shared/reference/ecosystem.md): OptunaSearch gets metric/mode itself; trials ASHA stopped
reach Optuna as PRUNED, not COMPLETE; Optuna trials a crash left RUNNING are taken up again on resume
(same parameters) instead of leaving zombies; a multi-node cluster with a driver-only tracking store is
refused; `address="local"` unless an address is given, so a laptop never joins a stranger's cluster.
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
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from search.config import SearchConfig
from search.space import TrialSpec, define_space
from search.trainable import METRIC, TrialContext, run_trial
from trainables.config import PipelineConfig, load_config, update
from trainables.errors import XstiltsError
from trainables.tasks import TARGETS, TASKS
from trainables.tracking import MlflowTracker, mask


class PrunedOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna PRUNED for trials a scheduler stopped before max_t, adopts Optuna
    trials left RUNNING by a crashed driver instead of asking new ones, and leaves the trials that failed
    (out of retries) RUNNING, for `--resume` to finish."""

    def __init__(self, *args, max_t: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_t = max_t

    def suggest(self, trial_id: str):
        if trial_id not in self._ot_trials and self._ot_study is not None:
            known = {t.number for t in self._ot_trials.values()}
            for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if frozen.number not in known:  # a zombie from before the crash: run it (same params)
                    self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, frozen._trial_id)
                    break
        return super().suggest(trial_id)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
        if error and trial_id in self._ot_trials:
            # Out of retries: leave its Optuna trial RUNNING, not FAIL, so `--resume` (which reruns errored
            # trials from their checkpoints) can still finish it as the same Optuna trial.
            return
        if result and not error and trial_id not in self._completed_trials and trial_id in self._ot_trials:
            self._report_last(self._ot_trials[trial_id], result)
        if (result and not error and trial_id not in self._completed_trials and trial_id in self._ot_trials
                and result.get("training_iteration", self._max_t) < self._max_t):
            ot_trial = self._ot_trials[trial_id]
            self._ot_study.tell(ot_trial, None, state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


    def _report_last(self, ot_trial, result: dict) -> None:
        """Tune hands a trial's last result (the rung ASHA stopped it at, or max_t) to on_trial_complete only,
        never to on_trial_result: record it as an intermediate value too, so Optuna's history of a trial has
        every rung it reported (as MLflow's does)."""
        step, value = result.get("training_iteration"), result.get(METRIC)
        if step is None or value is None or isinstance(self.metric, list):  # Optuna keeps no history per objective
            return
        if int(step) not in self._ot_study._storage.get_trial(ot_trial._trial_id).intermediate_values:
            ot_trial.report(float(value), int(step))


class SeededASHA(ASHAScheduler):
    """ASHA that never stops the seeded configurations (points_to_evaluate: the baseline, known mixtures):
    reports compare everything against them, so they always run to the last rung. Optuna asks the enqueued
    points first, so they are Optuna trials 0 .. k-1.

    It also keeps its rung records in `records` (`<search>/asha.json`, rewritten after every result): Ray Tune
    restores a search's trials and searcher after a crash but not its scheduler (ray-project/ray#30838), and
    an ASHA that forgot its rungs would let through trials the uninterrupted search stops. On unpickling (what
    `Tuner.restore` does) it reads them back, with the trials it already stopped: a trial stopped just before
    the crash, whose stop Ray had not saved yet, is stopped again when it reports.
    """

    def __init__(self, *args, protected: int = 0, records: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._protected = protected
        self._records = records
        self._stopped: dict[str, int] = {}  # trial id -> the rung it was stopped at

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        if trial.config.get("optuna_trial", self._protected) < self._protected:
            decision = self.CONTINUE
        at = result.get(self._time_attr, 0)
        if trial.trial_id in self._stopped and at >= self._stopped[trial.trial_id]:
            decision = self.STOP
        elif decision == self.STOP:
            self._stopped[trial.trial_id] = at
        self._save()
        return decision

    def on_trial_complete(self, tune_controller, trial, result):
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def _save(self) -> None:
        if not self._records:
            return
        path = Path(self._records)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"rungs": [[[m, rec] for m, rec in b._rungs] for b in self._brackets],
                                   "stopped": self._stopped}))
        tmp.replace(path)

    def __setstate__(self, state):
        self.__dict__.update(state)
        path = Path(self._records) if self._records else None
        if path is None or not path.exists():
            return
        saved = json.loads(path.read_text())
        for bracket, rungs in zip(self._brackets, saved["rungs"]):
            bracket._rungs = [(m, dict(rec)) for m, rec in rungs]
        self._stopped = dict(saved["stopped"])


def search_dir(cfg: SearchConfig) -> Path:
    return (Path(cfg.storage) / cfg.name).resolve()


def optuna_storage(cfg: SearchConfig) -> str:
    return cfg.optuna_storage or f"sqlite:///{search_dir(cfg) / 'optuna.db'}"


def init_ray(address: str | None) -> None:
    # One checkpoint per target rung is by design; Ray's "snapshotting may become a bottleneck" is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 object_store_memory=200 * 1024 ** 2)


def check_tracking(uri: str) -> None:
    """A SQLite/file store lives on the driver's disk: trials on other nodes cannot write to it."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1 and uri.startswith(("sqlite:", "file:", "/")):
        raise XstiltsError(f"this Ray cluster has {len(nodes)} nodes but the MLflow store {uri} is only reachable "
                           f"from the driver — run an MLflow tracking server and pass tracking_uri=http://HOST:5000")


def base_config(cfg: SearchConfig) -> PipelineConfig:
    """The trial's pipeline preset, validated, with paths made absolute (trials run in other folders)."""
    pcfg = load_config(cfg.pipeline, list(cfg.overrides))
    return update(pcfg, {"data_dir": str(Path(pcfg.data_dir).resolve()) if pcfg.data_dir else None,
                         "cache_dir": str(Path(pcfg.cache_dir).resolve()), "progress": False,
                         "tracking": {"enabled": False}})  # the trainable owns the trial's run


def check_objective(base: PipelineConfig) -> None:
    """The objective is the validation average: at least one target must have a validation split."""
    if not any(TASKS[t].has_validation for t in base.targets):
        raise XstiltsError(f"targets {base.targets} have no validation split, so the search has no objective — add "
                           f"one of {', '.join(t for t in TARGETS if TASKS[t].has_validation)}")


def trial_context(cfg: SearchConfig, base: PipelineConfig, uri: str | None, parent: str | None) -> TrialContext:
    return TrialContext(name=cfg.name, base=base, candidates=tuple(cfg.candidates), tracking_uri=uri,
                        experiment=cfg.experiment_name, parent_run_id=parent, seed=base.seed, repeats=cfg.repeats,
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


def build_tuner(cfg: SearchConfig, ctx: TrialContext, resume: bool, callbacks: list) -> tune.Tuner:
    workers = ctx.base.distributed.workers
    check_resources(cfg, workers)
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), trial_resources(cfg, workers))
    exp_dir = search_dir(cfg) / "ray"
    if resume and tune.Tuner.can_restore(str(exp_dir)):
        return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_errored=True)
    # (a resume whose driver died before Ray saved its experiment starts afresh, below)
    max_t = ctx.n_rungs
    points = [TrialSpec(mixture=p).to_params(cfg.candidates) for p in cfg.points_to_evaluate]
    metric, mode = objectives(cfg)
    searcher = PrunedOptunaSearch(
        functools.partial(define_space, cfg=cfg), metric=metric, mode=mode, max_t=max_t,
        points_to_evaluate=points or None,
        sampler=tpe_sampler(cfg.seed, cfg.num_samples),
        storage=optuna.storages.RDBStorage(optuna_storage(cfg)), study_name=cfg.name)
    scheduler = (SeededASHA(time_attr="training_iteration", max_t=max_t, grace_period=min(cfg.scheduler.grace_period, max_t),
                            reduction_factor=cfg.scheduler.reduction_factor, records=str(search_dir(cfg) / "asha.json"),
                            protected=len(cfg.points_to_evaluate) if cfg.scheduler.protect_seeded else 0)
                 if cfg.scheduler.enabled and max_t > 1 else FIFOScheduler())
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, metric=METRIC, mode="max",
                                    num_samples=cfg.num_samples, max_concurrent_trials=cfg.max_concurrent_trials,
                                    trial_dirname_creator=lambda t: t.trial_id),
        run_config=tune.RunConfig(name="ray", storage_path=str(search_dir(cfg)), verbose=0, callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))


def objectives(cfg: SearchConfig) -> tuple[str | list[str], str | list[str]]:
    """Optuna's metric(s) and direction(s): the validation average (max), and with `objectives: [average, cost]`
    the trial's accelerator-hours (min) too. Tune's own metric (ASHA, best result) stays the average."""
    if cfg.multi_objective:
        return [METRIC, cfg.cost_metric], ["max", "min"]
    return METRIC, "max"


def trial_values(cfg: SearchConfig, metrics: dict) -> float | list[float]:
    """What Optuna is told for a finished trial, from its last reported metrics."""
    metric, _ = objectives(cfg)
    return [float(metrics[m]) for m in metric] if isinstance(metric, list) else float(metrics[metric])


def tpe_sampler(seed: int, num_samples: int) -> optuna.samplers.TPESampler:
    """The search's sampler: TPE with a third of the budget (2..10 trials) sampled at random first."""
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, num_samples // 3)))


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
    zombies = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        result = by_number.get(t.number)
        if result is None:
            study.tell(t.number, state=TrialState.FAIL)
            zombies += 1
        elif result.error is None:
            if finished_all_rungs(result.metrics, max_t):
                step = int(result.metrics["training_iteration"])
                if not cfg.multi_objective and step not in t.intermediate_values:  # the dropped last rung
                    optuna.trial.Trial(study, t._trial_id).report(result.metrics[METRIC], step)
                study.tell(t.number, trial_values(cfg, result.metrics))
            else:
                study.tell(t.number, state=TrialState.PRUNED)
    return zombies
