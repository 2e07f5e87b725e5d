"""Search pieces without a Ray cluster: the space, PRUNED bookkeeping, zombies told FAIL and retried, ASHA, the
phase-2 cache.

Run: pytest tests/test_search_units.py
"""

import functools
import json
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.config import load_search_config
from search.space import TrialSpec, define_space
from search.trainable import METRIC
from search.searcher import StudySearcher
from trainables.cache import Cache
from trainables.config import load_config
from trainables.errors import XstiltsError

ROOT = Path(__file__).resolve().parents[1]
SEARCH_PRESETS = sorted((ROOT / "configs" / "search").rglob("*.yaml"))


@pytest.mark.parametrize("path", SEARCH_PRESETS, ids=lambda p: p.name)
def test_every_search_preset_loads_and_its_pipeline_too(path):
    if path.name.startswith("scaling"):  # a scaling study: one search per model
        from search.scaling import _search_cfg, load_scaling_config

        study = load_scaling_config(path)
        configs = [_search_cfg(study, m) for m in study.models]
        assert len(configs) >= 2
    else:
        configs = [load_search_config(path)]
    for cfg in configs:
        load_config(ROOT / cfg.pipeline, cfg.overrides)
    assert path.read_text().startswith("#")


def test_bad_search_configs():
    with pytest.raises(XstiltsError, match="unknown intermediate task 'mnlx'"):
        load_search_config(None, ["candidates=[mnli,mnlx]"])
    with pytest.raises(XstiltsError, match="points_to_evaluate: 'qqp' is not a candidate"):
        load_search_config(None, ["candidates=[mnli]", "points_to_evaluate=[{qqp: 1.0}]"])
    with pytest.raises(XstiltsError, match="low 2.0 > high 1.0"):
        load_search_config(None, ["weight={low: 2.0, high: 1.0}"])
    with pytest.raises(XstiltsError, match=r"objectives \['cost'\] — use \[average\] or \[average, cost\]"):
        load_search_config(None, ["objectives=[cost]"])
    with pytest.raises(XstiltsError, match="objectives"):
        load_search_config(None, ["objectives=[average, speed]"])


def test_space_spec_and_config_round_trip():
    """Optuna parameters -> TrialSpec -> PipelineConfig by typed update: every value arrives as sampled (a float
    like 1e-05 never passes through a string), and a spec survives the trip back to parameters."""
    cfg = load_search_config(ROOT / "configs/search/toy.yaml", ["temperature={low: 0.5, high: 4.0}",
                                                                 "target_lr={low: 1.0e-5, high: 1.0e-3}"])
    base = load_config(ROOT / cfg.pipeline, list(cfg.overrides))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(10):
        trial = study.ask()
        const = define_space(trial, cfg)
        params = {**trial.params, **const}
        spec = TrialSpec.from_params(params, cfg.candidates, seed=7)
        assert set(spec.mixture) == {t for t in cfg.candidates if params[f"use_{t}"]}
        pcfg = spec.pipeline_config(base)
        assert pcfg.intermediate.mixture == dict(spec.mixture) and pcfg.seed == 7
        assert pcfg.intermediate.lr == params["intermediate_lr"] and pcfg.target.lr == params["target_lr"]
        assert pcfg.intermediate.temperature == params["temperature"]
        assert pcfg.target.epochs == base.target.epochs  # untouched settings stay the preset's
        assert TrialSpec.from_params(spec.to_params(cfg.candidates), cfg.candidates, seed=7) == spec
        study.tell(trial, 0.0)
    assert TrialSpec({"mnli": 1.0}).to_params(["mnli", "qqp"]) == {"use_mnli": True, "use_qqp": False, "w_mnli": 1.0}


def test_a_bad_spec_is_refused_by_the_pipeline_config():
    base = load_config(ROOT / "configs/pipeline/toy.yaml")
    with pytest.raises(XstiltsError, match="intermediate.lr: Input should be greater than 0"):
        TrialSpec({"mnli": 1.0}, intermediate_lr=-1.0).pipeline_config(base)


def _searcher(storage, max_t=3, points=None):
    cfg = load_search_config(None, ["candidates=[mnli,qqp]"])
    return StudySearcher(functools.partial(define_space, cfg=cfg), metric="validation/average", mode="max",
                         max_t=max_t, storage=storage, study_name="s", sampler=optuna.samplers.RandomSampler(seed=0),
                         points_to_evaluate=points)


def test_scheduler_stopped_trials_reach_optuna_as_pruned(tmp_path):
    s = _searcher(f"sqlite:///{tmp_path}/o.db")
    s.suggest("a"), s.suggest("b")
    # Tune hands the result a trial stops at to on_trial_complete only (not on_trial_result)
    s.on_trial_complete("a", {"validation/average": 10.0, "training_iteration": 1})  # stopped at rung 1 of 3
    for it in (1, 2):
        s.on_trial_result("b", {"validation/average": 20.0 + it, "training_iteration": it})
    s.on_trial_complete("b", {"validation/average": 23.0, "training_iteration": 3})
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/o.db")
    states = {t.number: (t.state, t.value) for t in study.trials}
    assert states == {0: (TrialState.PRUNED, 10.0), 1: (TrialState.COMPLETE, 23.0)}  # pruned: last rung value
    assert [t.intermediate_values for t in study.trials] == [{1: 10.0}, {1: 21.0, 2: 22.0, 3: 23.0}]  # every rung


def test_optuna_trials_link_to_their_ray_trial_and_mlflow_run(tmp_path):
    """Each Optuna trial carries its Ray trial id from its first result and its MLflow run id once a result has one
    (a tracking server down at the trial's start gives it later), including a trial stopped at its first rung."""
    s = _searcher(f"sqlite:///{tmp_path}/o.db")
    s.suggest("a"), s.suggest("b")
    s.on_trial_result("a", {"validation/average": 10.0, "training_iteration": 1})  # no run yet
    s.on_trial_result("a", {"validation/average": 11.0, "training_iteration": 2, "mlflow_run_id": "run-a"})
    s.on_trial_complete("a", {"validation/average": 12.0, "training_iteration": 3, "mlflow_run_id": "run-a"})
    s.on_trial_complete("b", {"validation/average": 5.0, "training_iteration": 1, "mlflow_run_id": "run-b"})
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/o.db")
    assert [t.user_attrs for t in study.trials] == [{"ray_trial_id": "a", "mlflow_run_id": "run-a"},
                                                   {"ray_trial_id": "b", "mlflow_run_id": "run-b"}]


def test_a_trial_restored_from_an_older_snapshot_reports_again_without_error(tmp_path):
    """Tune snapshots its experiment now and then: after a driver crash, the restored searcher may not know that
    a trial's Optuna trial finished, and the trial, rerun from its checkpoint, reports its rungs again. The
    finished Optuna trial is left as it was (before: UpdateFinishedTrialError ended the resumed search)."""
    s = _searcher(f"sqlite:///{tmp_path}/o.db")
    s.suggest("a")
    s.on_trial_result("a", {"validation/average": 11.0, "training_iteration": 1})
    s.save(str(tmp_path / "searcher.pkl"))  # what Tune saved before the crash
    for it in (2, 3):
        s.on_trial_result("a", {"validation/average": 11.0 + it, "training_iteration": it})
    s.on_trial_complete("a", {"validation/average": 14.0, "training_iteration": 3})
    restored = _searcher(f"sqlite:///{tmp_path}/o.db")
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("a", {"validation/average": 99.0, "training_iteration": 2})
    restored.on_trial_result("a", {"validation/average": 99.0, "training_iteration": 3})
    restored.on_trial_complete("a", {"validation/average": 99.0, "training_iteration": 3})
    (trial,) = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/o.db").trials
    assert (trial.state, trial.value, trial.intermediate_values) == (
        TrialState.COMPLETE, 14.0, {1: 11.0, 2: 13.0, 3: 14.0})


def test_a_crash_zombie_is_told_fail_and_its_parameters_run_again(tmp_path):
    """An Optuna trial a crashed driver left RUNNING, with no Ray trial to resume it, is told FAIL and enqueued
    again with the same parameters: the retry runs next (a seeded point stays seeded) and the history shows both.
    A trial the restored searcher knows (Tune resumes it) is not a zombie."""
    storage = f"sqlite:///{tmp_path}/o.db"
    crashed = _searcher(storage, points=[{"use_mnli": False, "use_qqp": False}])
    seeded = crashed.suggest("t0")  # the baseline, asked, then the driver died: RUNNING forever in storage
    assert seeded["seeded"] is True and seeded["optuna_trial"] == 0
    free = crashed.suggest("t1")
    del crashed.__dict__["_numbers"]["t0"]  # Tune had saved its experiment with t1 in it, not t0
    crashed.save(str(tmp_path / "searcher.pkl"))
    restored = _searcher(storage, points=[{"use_mnli": False, "use_qqp": False}])
    restored.restore(str(tmp_path / "searcher.pkl"))
    again = restored.suggest("t9")
    assert again == {**seeded, "optuna_trial": 2}  # same parameters, still seeded, a new number
    restored.on_trial_complete("t9", {"validation/average": 5.0, "training_iteration": 3})
    restored.on_trial_complete("t1", {"validation/average": 6.0, "training_iteration": 3})
    study = optuna.load_study(study_name="s", storage=storage)
    assert [(t.number, t.state) for t in study.trials] == [(0, TrialState.FAIL), (1, TrialState.COMPLETE),
                                                          (2, TrialState.COMPLETE)]
    assert study.trials[2].params == study.trials[0].params and study.trials[1].params == {
        k: v for k, v in free.items() if k != "optuna_trial"}
    assert study.trials[2].user_attrs["retry_of"] == 0 and study.trials[2].user_attrs["seeded"] is True
    assert len(study.trials) == 3  # the point was not asked again


def test_a_zombies_retry_runs_before_the_seeded_points_not_yet_asked(tmp_path):
    """Seeded points p0, p1, p2: the driver dies while p1 runs (p1 a zombie). The resumed search runs p1 again,
    then p2 — the order of the uninterrupted search (ASHA's cutoffs depend on it) — and asks no point twice, also
    when its saved state is older than the study (the points asked are read from the study)."""
    storage = f"sqlite:///{tmp_path}/o.db"
    points = [{"use_mnli": False, "use_qqp": False}, {"use_mnli": True, "w_mnli": 1.0, "use_qqp": False},
              {"use_mnli": False, "use_qqp": True, "w_qqp": 1.0}]
    crashed = _searcher(storage, points=points)
    crashed.suggest("a")
    crashed.save(str(tmp_path / "searcher.pkl"))  # saved before p1 was asked
    crashed.suggest("b")
    restored = _searcher(storage, points=points)
    restored.restore(str(tmp_path / "searcher.pkl"))
    order = [restored.suggest(t) for t in ("c", "d", "e")]
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state for t in study.trials[:2]] == [TrialState.RUNNING, TrialState.FAIL]  # a: known, resumed
    assert [c["optuna_trial"] for c in order] == [2, 3, 4] and study.trials[2].user_attrs["retry_of"] == 1
    assert [study.trials[n].params for n in (2, 3)] == [points[1], points[2]]
    assert "seeded" not in order[2]  # the points are done: TPE's turn


def test_a_restored_searcher_opens_the_study_where_the_search_folder_is_now(tmp_path):
    """Tune pickles the searcher (tuner.pkl) with the study's URL of the search's start; unpickled inside
    `study_at`, and restored from its saved state, it opens the study at the new place."""
    import pickle

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    s = _searcher(f"sqlite:///{old}/o.db")
    pickled = pickle.dumps(s)
    s.suggest("a")
    s.save(str(tmp_path / "searcher.pkl"))
    old.rename(new)
    with StudySearcher.study_at(f"sqlite:///{new}/o.db"):
        restored = pickle.loads(pickled)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("a", {"validation/average": 7.0, "training_iteration": 3})
    (trial,) = optuna.load_study(study_name="s", storage=f"sqlite:///{new}/o.db").trials
    assert trial.state == TrialState.COMPLETE and trial.value == 7.0 and not old.exists()


def test_a_restored_ray_trial_the_searcher_never_saved_keeps_its_optuna_trial(tmp_path):
    """Tune saves its experiment, then its searcher: a crash between the two restores a Ray trial the searcher's
    state does not know. Its results reach the Optuna trial its config names, which is not taken for a zombie."""
    storage = f"sqlite:///{tmp_path}/o.db"
    s = _searcher(storage)
    s.save(str(tmp_path / "searcher.pkl"))  # the searcher as last saved
    config = s.suggest("a")  # then trial a was asked, and the experiment (not the searcher) saved again
    restored = _searcher(storage)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("a", {"validation/average": 5.0, "training_iteration": 1, "config": config})
    restored.suggest("b")  # the searcher's first look for zombies: a is known by now
    restored.on_trial_complete("a", {"validation/average": 6.0, "training_iteration": 3, "config": config})
    study = optuna.load_study(study_name="s", storage=storage)
    assert [(t.number, t.state) for t in study.trials] == [(0, TrialState.COMPLETE), (1, TrialState.RUNNING)]
    assert study.trials[0].intermediate_values == {1: 5.0, 3: 6.0}


def test_truncated_cache_entry_is_detected(tmp_path):
    entry = Cache(tmp_path).entry("phase2", {"x": 1})
    path, meta, hit = entry.get_or_build(lambda tmp: (tmp / "model.safetensors").write_bytes(b"x" * 100) and {"n": 1})
    assert not hit and meta == {"n": 1} and entry.valid()
    (path / "model.safetensors").write_bytes(b"x" * 40)  # truncated
    assert not entry.valid()
    (path / "xstilts-manifest.json").write_text("{not json")
    assert not entry.valid()
    shutil.rmtree(path)
    assert not entry.valid()


def _asha_run(scheduler_factory, rewards, crash_after=None, seeded=(0,)):
    """Trials report rungs 1..3 one after another (max_concurrent_trials=1); rewards[t][r] is trial t's value at
    rung r+1. With `crash_after=(t, r)`, the driver dies once trial t has reported rung r: the scheduler comes
    back the way `Tuner.restore` brings it back (unpickled from the copy pickled at the search's start), all
    trials are re-added, and trial t goes on from its checkpoint. Returns {trial: rung it stopped at}."""
    import pickle
    from types import SimpleNamespace

    sched = scheduler_factory()
    at_start = pickle.dumps(sched)
    trials = [SimpleNamespace(trial_id=f"t{i}", config={"optuna_trial": i, **({"seeded": True} if i in seeded else {})})
              for i in range(len(rewards))]
    stopped = {}
    for t, trial in enumerate(trials):
        sched.on_trial_add(None, trial)
        for rung, value in enumerate(rewards[t], start=1):
            decision = sched.on_trial_result(None, trial, {"training_iteration": rung, METRIC: value})
            if (t, rung) == crash_after:
                sched = pickle.loads(at_start)
                for tr in trials[:t + 1]:
                    sched.on_trial_add(None, tr)
            if decision == sched.STOP and rung < len(rewards[t]):  # (at the last rung: done, not stopped)
                stopped[t] = rung
                break
        if t not in stopped:
            sched.on_trial_complete(None, trial, {"training_iteration": len(rewards[t]), METRIC: value})
    return stopped


def test_asha_keeps_its_rungs_across_a_restore(tmp_path):
    """Ray Tune does not restore a scheduler's state (ray-project/ray#30838): a plain ASHA restored mid-search
    forgets its rungs and lets through a trial the uninterrupted search stops. SeededASHA keeps them in
    asha.json, so the resumed search stops the same trials at the same rungs."""
    from ray.tune.schedulers import ASHAScheduler

    from search.asha import SeededASHA

    rewards = [[40, 41, 42], [50, 52, 53], [48, 49, 50], [45, 46, 51], [30, 31, 32], [47, 48, 49]]
    kw = dict(time_attr="training_iteration", metric=METRIC, mode="max", max_t=3, grace_period=1, reduction_factor=2)
    seeded = lambda name: lambda: SeededASHA(records=str(tmp_path / name), **kw)  # noqa: E731  (a journal each)
    plain = lambda: ASHAScheduler(**kw)  # noqa: E731
    straight = _asha_run(seeded("straight.json"), rewards)
    assert straight and 0 not in straight  # ASHA stopped some, never the protected baseline
    crash = (3, 1)
    assert _asha_run(seeded("crash.json"), rewards, crash_after=crash) == straight
    assert _asha_run(plain, rewards) == straight
    assert _asha_run(plain, rewards, crash_after=crash) != straight  # the bug SeededASHA's records fix


def test_system_metrics_measure_this_process():
    """CPU utilisation since the last take (busy: well above zero; asleep: near zero) and peak memory, which an
    allocation larger than the peak so far raises, and a new `Usage` (the next trial in a reused process) starts
    afresh."""
    import time

    from trainables.sysmetrics import Usage

    usage = Usage()
    end = time.time() + 0.3
    while time.time() < end:
        pass
    busy = usage.take()
    time.sleep(0.3)
    idle = usage.take()
    busy_pct, idle_pct = busy["system/cpu_utilization_percentage"], idle["system/cpu_utilization_percentage"]
    assert busy_pct > 10 and busy_pct > 3 * idle_pct, (busy_pct, idle_pct)  # (a loaded machine lowers both)
    before = idle["system/process_peak_memory_megabytes"]
    block = bytearray(int(before + 100) * 2 ** 20)  # larger than the whole peak so far, touched: resident
    block[::4096] = b"x" * len(block[::4096])
    assert usage.take()["system/process_peak_memory_megabytes"] >= before + 100
    del block
    from trainables.sysmetrics import reset_peak

    if reset_peak():  # Linux: the next trial in this process (Tune's reuse_actors) measures its own peak
        assert Usage().take()["system/process_peak_memory_megabytes"] < before + 50


@pytest.mark.slow  # seconds: MLflow's SQLite store
def test_runs_carry_mlflow_context_tags(tmp_path):
    """A new run carries MLflow's context tags: user, source, the xstilts checkout's git commit, its version; a
    trial's run carries those its driver resolved (`context`), not its Ray worker's."""
    import subprocess

    from mlflow import MlflowClient

    from trainables.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tags = MlflowClient(uri).get_run(MlflowTracker(uri, "exp", "run").run_id).data.tags
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL" and tags["xstilts.version"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's clean clone is one)
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    trial = MlflowTracker(uri, "exp", "trial-0", tags={"ray.trial_id": "t0"},
                          context={"mlflow.user": "driver-user", "mlflow.source.git.commit": "abc"})
    tags = MlflowClient(uri).get_run(trial.run_id).data.tags
    assert (tags["mlflow.user"], tags["mlflow.source.git.commit"], tags["ray.trial_id"]) == ("driver-user", "abc", "t0")
    from trainables.tasks import dataset_inputs

    trial.log_inputs(dataset_inputs(["mnli"], ["xnli"], None, False))
    logged = MlflowClient(uri).get_run(trial.run_id).inputs.dataset_inputs
    assert sorted((i.dataset.name, i.dataset.source_type, i.tags[0].value) for i in logged) == [
        ("mnli:nyu-mll/glue/mnli", "hugging_face", "intermediate"), ("mnli:nyu-mll/glue/mnli", "hugging_face", "target"),
        ("xnli:facebook/xnli/{lang}", "hugging_face", "target")]


def test_dataset_inputs_name_every_source_a_run_reads():
    """Each source of the mixture's tasks (intermediate) and of each target and the task it trains on (target);
    the toy world and data prepared locally say so; a licensed local-only source is local."""
    import json

    from trainables.tasks import TASKS, dataset_inputs

    hub = dataset_inputs(["qqp"], ["xnli", "panx"], None, False)
    assert [(d["name"].split(":")[0], d["context"]) for d in hub] == [
        ("qqp", "intermediate"), ("xnli", "target"), ("mnli", "target"), ("panx", "target")]
    assert json.loads(hub[1]["source"]) == {"path": "facebook/xnli", "config_name": "{lang}", "revision": None}
    assert len({d["digest"] for d in hub}) == len(hub)
    toy = dataset_inputs(["qqp"], ["xnli"], "/data/toy", True)
    assert {d["source_type"] for d in toy} == {"local"} and all(json.loads(d["source"])["data_dir"] == "/data/toy"
                                                                for d in toy)
    licensed = next(t for t in TASKS if any(s.local_only for s in TASKS[t].sources))
    assert "local" in {d["source_type"] for d in dataset_inputs([], [licensed], None, False)}


def test_asha_reads_its_records_where_the_search_folder_is_now(tmp_path):
    """Tune pickles the scheduler with the records' path of the search's start; a search folder moved since is
    restored (inside `records_at`) from where it is now, and writes there from then on."""
    import pickle
    from types import SimpleNamespace

    from search.asha import SeededASHA

    kw = dict(time_attr="training_iteration", metric=METRIC, mode="max", max_t=3, grace_period=1, reduction_factor=2)
    sched = SeededASHA(records=str(tmp_path / "old" / "asha.json"), **kw)
    pickled = pickle.dumps(sched)  # what Tune keeps in tuner.pkl: the scheduler as the search started
    (tmp_path / "old").mkdir()
    for i, value in enumerate((50.0, 40.0)):
        sched.on_trial_result(None, SimpleNamespace(trial_id=f"t{i}", config={}), {"training_iteration": 1, METRIC: value})
    (tmp_path / "old").rename(tmp_path / "new")
    with SeededASHA.records_at(tmp_path / "new" / "asha.json"):
        moved = pickle.loads(pickled)
    assert moved.rungs[1] == {"t0": 50.0, "t1": 40.0} and moved.stopped == {"t1": 1}
    assert pickle.loads(pickled).rungs[1] == {}  # outside the block: the old path, gone: nothing read
    moved.on_trial_result(None, SimpleNamespace(trial_id="t2", config={}), {"training_iteration": 1, METRIC: 45.0})
    assert len((tmp_path / "new" / "asha.json").read_text().splitlines()) == 4


def test_asha_never_stops_a_seeded_trial(tmp_path):
    """A seeded configuration (its config says `seeded: True`: the baseline, known mixtures) runs every rung
    however it does; with protect=False, or unmarked, the same trial is stopped."""
    from search.asha import SeededASHA

    rewards = [[50, 52, 53], [48, 49, 50], [30, 31, 32], [47, 48, 49]]
    kw = dict(time_attr="training_iteration", metric=METRIC, mode="max", max_t=3, grace_period=1, reduction_factor=2)
    assert 2 in _asha_run(lambda: SeededASHA(**kw), rewards, seeded=())
    assert 2 in _asha_run(lambda: SeededASHA(protect=False, **kw), rewards, seeded=(2,))
    assert 2 not in _asha_run(lambda: SeededASHA(**kw), rewards, seeded=(2,))


def test_a_trial_stopped_before_a_crash_records_nothing_more():
    """Ray may not have saved a stop before the driver died: the trial comes back and reports its next rung. It is
    stopped again and that rung is not recorded (the straight run never saw it), so later cutoffs stay the same."""
    import pickle
    from types import SimpleNamespace

    from search.asha import SeededASHA

    kw = dict(time_attr="training_iteration", metric=METRIC, mode="max", max_t=4, grace_period=1, reduction_factor=2)
    sched = SeededASHA(**kw)
    a, b = (SimpleNamespace(trial_id=t, config={}) for t in "ab")
    assert sched.on_trial_result(None, a, {"training_iteration": 1, METRIC: 50.0}) == sched.CONTINUE
    assert sched.on_trial_result(None, b, {"training_iteration": 1, METRIC: 40.0}) == sched.STOP
    before = pickle.loads(pickle.dumps(sched.rungs))
    assert sched.on_trial_result(None, b, {"training_iteration": 2, METRIC: 99.0}) == sched.STOP
    sched.on_trial_complete(None, b, {"training_iteration": 2, METRIC: 99.0})
    assert sched.rungs == before and "b" not in sched.rungs[2]


@pytest.mark.parametrize("rf,grace,max_t", [(2, 1, 9), (3, 1, 9), (2, 2, 8), (4, 1, 16)])
def test_our_asha_stops_what_rays_stops(rf, grace, max_t):
    """SeededASHA keeps its own state but must decide as Ray's ASHAScheduler (one bracket) does:
    ray/tune/schedulers/async_hyperband.py. 60 trials of random rung values; nothing seeded."""
    import random

    from ray.tune.schedulers import ASHAScheduler

    from search.asha import SeededASHA

    rng = random.Random(rf * 100 + grace + max_t)
    rewards = [[b + rng.gauss(0, 2) * r for r in range(1, max_t + 1)] for b in (rng.uniform(30, 60) for _ in range(60))]
    kw = dict(time_attr="training_iteration", metric=METRIC, mode="max", max_t=max_t, grace_period=grace,
              reduction_factor=rf)
    ours = _asha_run(lambda: SeededASHA(**kw), rewards, seeded=())
    assert ours == _asha_run(lambda: ASHAScheduler(**kw), rewards, seeded=())
    assert len(ours) > 20  # there was stopping to agree on


def _trial(trial_id: str, number: int):
    from types import SimpleNamespace

    return SimpleNamespace(trial_id=trial_id, config={"optuna_trial": number})


def _checkpoint(tmp: Path, ops: list):
    """A rung's checkpoint as a trial makes it (search/trainable.py `_report`): its recorded tracking calls in it."""
    from ray import tune

    from search.tracking import TRACKING

    folder = tmp / f"checkpoint-{len(list(tmp.glob('checkpoint-*')))}"
    folder.mkdir()
    (folder / TRACKING).write_text(json.dumps(ops))
    return tune.Checkpoint.from_directory(str(folder))


def _recorded(steps, extra_params=None) -> list:
    """What a trial hands to Tune with a report: its recorded tracking calls (search/trainable.py)."""
    from trainables.tracking import RecordingTracker

    rec = RecordingTracker()
    rec.set_tags({"node": "n1"})
    rec.log_params({"mix/mnli": 0.5, **(extra_params or {})})
    for step in steps:
        rec.log_metrics({"validation/average": 40.0 + step, "target/xnli/de/accuracy": 30.0 + step}, step=step)
    rec.close()  # (the driver closes, with Ray's verdict)
    return rec.drain()


@pytest.mark.slow  # seconds: MLflow's SQLite store
def test_trials_are_tracked_from_the_driver_through_an_outage_and_a_driver_restart(tmp_path, monkeypatch):
    """Trials only record (in their checkpoints); the driver's callback writes their runs. While the store is down
    nothing is lost or blocks Tune: the writes wait in the callback's state, which Tune saves with its experiment;
    a restarted driver writes them when the store answers (at its new address), into the run it finds by Ray trial
    id, with the trial's start and end times, closed with Ray's verdict. A write the store refuses for good is
    dropped without holding up the rest."""
    import pickle
    import time

    from mlflow import MlflowClient

    from helpers import free_port
    from search.tracking import TrackTrials, run_of
    from trainables.errors import XstiltsError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # (the test's unreachable store fails at once)
    down = f"http://127.0.0.1:{free_port()}"
    up = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ckpts = tmp_path / "ckpt"
    ckpts.mkdir()
    driver = TrackTrials(down, "exp", None, "s", context={"mlflow.user": "someone"})
    driver.RETRY_S = 0.2
    driver.on_trial_start(0, [], _trial("t1", 1))
    started = int(time.time() * 1000)
    driver.on_checkpoint(0, [], _trial("t1", 1), _checkpoint(ckpts, _recorded([1], {"HF_TOKEN": "hf_secret"})))
    driver.on_checkpoint(0, [], _trial("t1", 1), _checkpoint(ckpts, _recorded([2])))
    driver.on_trial_complete(0, [], _trial("t1", 1))
    driver.on_trial_complete(0, [], _trial("never-started", 9))  # stopped while pending: no run is made for it
    ended = int(time.time() * 1000)
    with pytest.raises(XstiltsError, match="did not come back") as err:
        driver.finish(patience_s=1.0)
    assert "--resume" in str(err.value)
    saved = pickle.loads(pickle.dumps(driver.get_state()))  # what Tune keeps in its experiment state
    assert "hf_secret" not in json.dumps(saved)
    assert [op[0] for op in saved["queue"]["t1"]] == ["open", "tags", "params", "metrics", "tags", "params",
                                                      "metrics", "close"]

    restarted = pickle.loads(pickle.dumps(driver))  # a new driver: the tuner.pkl copy, then Tune's saved state
    restarted.set_state(saved)
    TrackTrials.driver = TrackTrials(up, "exp", None, "s")  # (the store is back: here under another address)
    try:
        restarted.setup()
    finally:
        TrackTrials.driver = None
    time.sleep(0.05)
    restarted.finish(patience_s=10)
    client = MlflowClient(up)
    exp = client.get_experiment_by_name("exp").experiment_id
    [run] = client.search_runs([exp])
    assert run.info.status == "FINISHED" and run.info.run_name == "trial-1"
    # when the trial started and ended, not when the restarted driver wrote it
    assert started - 1000 <= run.info.start_time <= started and run.info.end_time <= ended
    assert run.data.params == {"mix/mnli": "0.5"}  # secrets never logged
    assert {k: run.data.tags[k] for k in ("ray.trial_id", "optuna.trial", "xstilts.search", "mlflow.user", "node")} \
        == {"ray.trial_id": "t1", "optuna.trial": "1", "xstilts.search": "s", "mlflow.user": "someone", "node": "n1"}
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "validation/average")] == \
        [(1, 41.0), (2, 42.0)]

    again = TrackTrials(up, "exp", None, "s")  # a driver with no saved state: the trial resumed once more
    again.setup()
    again.on_trial_start(0, [], _trial("t1", 1))
    again.send()
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # taken up again
    assert run_of("t1") == run.info.run_id  # for the searcher's link to the Optuna trial
    again.on_checkpoint(0, [], _trial("t1", 1), _checkpoint(ckpts, _recorded([3])))
    again.on_trial_error(0, [], _trial("t1", 1))
    again.finish(patience_s=10)
    assert len(client.search_runs([exp])) == 1  # found by its Ray trial id, not made twice
    assert client.get_run(run.info.run_id).info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "validation/average")] == [1, 2, 3]

    refused = TrackTrials(up, "exp", None, "s")  # a write the store refuses for good is dropped, not retried
    refused.add("t1", [["params", [["mix/mnli", "0.9"]]], ["metrics", [["validation/average", 50.0, 1, 4]]]])
    refused.add("t2", [["open", 1], ["metrics", [["validation/average", 1.0, 1, 1]]]], 2)  # (queued behind it)
    refused.finish(patience_s=10)
    assert "params" in refused.dropped["t1"] and client.get_run(run.info.run_id).data.params == {"mix/mnli": "0.5"}
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "validation/average")) == [1, 2, 3, 4]
    assert len(client.search_runs([exp])) == 2
    TrackTrials.active = None


@pytest.mark.slow  # seconds: MLflow's SQLite store
def test_a_dead_drivers_trials_runs_are_closed_failed_and_writes_go_in_batches(tmp_path):
    """At the end, the runs of this search's Optuna trials told FAIL (a dead driver's, rerun under new numbers)
    are closed FAILED; another search's run of the same number is left alone. Many metric reports go to MLflow
    as few `log_batch` requests as its limits allow."""
    from mlflow import MlflowClient

    from search.tracking import TrackTrials
    from trainables.tracking import MlflowTracker, RunWriter

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for trial_id, search in (("z", "search"), ("o", "other")):  # RUNNING: their drivers died
        MlflowTracker(uri, "exp", "trial-5", tags={"ray.trial_id": trial_id, "optuna.trial": "5",
                                                   "xstilts.search": search})
    TrackTrials(uri, "exp", None, "search").finish(patience_s=10, failed={5})
    client = MlflowClient(uri)
    runs = {r.data.tags["ray.trial_id"]: r for r in client.search_runs([client.get_experiment_by_name("exp").experiment_id])}
    assert runs["z"].info.status == "FAILED" and runs["o"].info.status == "RUNNING"

    writer = RunWriter(uri)
    calls = []
    real = writer.client.log_batch
    writer.client.log_batch = lambda run_id, **kw: (calls.append({k: len(v) for k, v in kw.items()}), real(run_id, **kw))
    ops = [["metrics", [[f"m{i}", float(i), 1, step] for i in range(500)]] for step in (1, 2, 3)]
    writer.send(runs["o"].info.run_id, ops + [["tags", [["a", "1"]]], ["tags", [["a", "2"]]]])
    assert calls == [{"tags": 1}, {"metrics": 1000}, {"metrics": 500}]
    assert client.get_run(runs["o"].info.run_id).data.tags["a"] == "2"
    assert len(client.get_metric_history(runs["o"].info.run_id, "m7")) == 3


def test_live_table_tells_pruned_from_done_and_error(capsys):
    """A trial ASHA stopped before the last rung reads PRUNED, one that reported every rung DONE (issue 11)."""
    from types import SimpleNamespace

    from search.run import LiveTable

    table = LiveTable(["mnli", "qqp"], max_t=4)
    config = {"optuna_trial": 3, "use_mnli": True, "w_mnli": 1.0, "use_qqp": False}
    stopped = SimpleNamespace(trial_id="a", config=config, last_result={"training_iteration": 2, METRIC: 30.0})
    finished = SimpleNamespace(trial_id="b", config={**config, "optuna_trial": 4},
                               last_result={"training_iteration": 4, METRIC: 41.0})
    broken = SimpleNamespace(trial_id="c", config={**config, "optuna_trial": 5}, last_result={})
    table.on_trial_complete(0, [], stopped)
    table.on_trial_complete(0, [], finished)
    table.on_trial_error(0, [], broken)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[2].split()[0] for line in lines] == ["PRUNED", "DONE", "ERROR"], lines


def test_live_table_on_a_terminal_stays_small_in_a_long_search():
    """On a terminal the table holds the running trials and the best finished ones, whatever the number of trials
    (drawing every trial at every event made the driver quadratic); its title counts the rest."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from search.run import LiveTable

    table = LiveTable(["mnli", "qqp"], max_t=2)
    table._console = Console(file=io.StringIO(), force_terminal=True, width=120)
    for i in range(300):
        trial = SimpleNamespace(trial_id=f"t{i}", config={"optuna_trial": i, "use_mnli": True, "w_mnli": 1.0},
                                last_result={})
        table.on_trial_start(0, [], trial)
        table.on_trial_result(0, [], trial, {METRIC: float(i % 97)})
        if i < 290:  # the last 10 keep running
            trial.last_result = {"training_iteration": 1 + i % 2, METRIC: float(i % 97)}
            table.on_trial_complete(0, [], trial)
    table.on_experiment_end([])
    drawn = table.live.renderable
    assert drawn.row_count == 10 + LiveTable.SHOW_BEST
    assert drawn.title == "10 running, 145 pruned, 145 done"
    scores = [float(cell) for cell in drawn.columns[3]._cells[10:]]
    assert scores == sorted(scores, reverse=True) and scores[0] == 96.0


def test_settle_study_makes_optuna_agree_with_ray(tmp_path):
    """At a search's end Optuna must agree with Ray: a trial Ray finished (whose completion Tune's
    ConcurrencyLimiter dropped after a retry) is COMPLETE with its last rung recorded; one stopped early is PRUNED;
    one with no Ray trial (a crash's zombie) FAIL; one that errored for good stays RUNNING for --resume."""
    from types import SimpleNamespace

    import optuna
    from optuna.trial import TrialState as OT

    from search.config import load_search_config
    from search.tuner import optuna_storage, settle_study

    cfg = load_search_config("toy", [f"storage={tmp_path}", "name=s"])
    (tmp_path / "s").mkdir()
    study = optuna.create_study(study_name="s", storage=optuna_storage(cfg), direction="maximize")
    for i in range(4):
        trial = study.ask()
        trial.report(40.0, 1)
        if i != 1:  # trial 1: ASHA stopped it at rung 2, a result Tune's ConcurrencyLimiter dropped
            trial.report(41.0, 2)
    results = [SimpleNamespace(config={"optuna_trial": 0}, error=None, metrics={"training_iteration": 3, METRIC: 42.0}),
               SimpleNamespace(config={"optuna_trial": 1}, error=None, metrics={"training_iteration": 2, METRIC: 41.5}),
               SimpleNamespace(config={"optuna_trial": 3}, error=RuntimeError("out of retries"), metrics={})]
    assert settle_study(cfg, results, max_t=3) == 1  # trial 2: the zombie
    done, pruned, zombie, errored = study.get_trials()
    assert done.state == OT.COMPLETE and done.value == 42.0 and done.intermediate_values == {1: 40.0, 2: 41.0, 3: 42.0}
    assert pruned.state == OT.PRUNED and zombie.state == OT.FAIL and errored.state == OT.RUNNING
    assert pruned.intermediate_values == {1: 40.0, 2: 41.5} and pruned.value == 41.5  # the rung it stopped at


def test_multi_objective_trials_reach_optuna_with_score_and_cost(tmp_path):
    """objectives: [average, cost]: Optuna is told (average, cost) for a finished trial, PRUNED for one ASHA
    stopped (no per-rung history: Optuna has none for several objectives), and the Pareto front is the
    trials no other beats on both."""
    cfg = load_search_config(None, ["candidates=[mnli,qqp]", "objectives=[average, cost]"])
    storage = f"sqlite:///{tmp_path}/o.db"
    from search.tuner import objectives

    metric, mode = objectives(cfg)
    assert metric == [METRIC, "cost/cpu_hours"] and mode == ["max", "min"]
    s = StudySearcher(lambda t: define_space(t, cfg), metric=metric, mode=mode, max_t=3, storage=storage,
                      study_name="s", sampler=optuna.samplers.RandomSampler(seed=0))
    for trial_id in "abcd":
        s.suggest(trial_id)
    for it in (1, 2):
        s.on_trial_result("b", {METRIC: 20.0 + it, "cost/cpu_hours": 0.01 * it, "training_iteration": it})
    s.on_trial_complete("a", {METRIC: 10.0, "cost/cpu_hours": 0.001, "training_iteration": 1})  # stopped at rung 1
    s.on_trial_complete("b", {METRIC: 23.0, "cost/cpu_hours": 0.03, "training_iteration": 3})
    s.on_trial_complete("c", {METRIC: 21.0, "cost/cpu_hours": 0.01, "training_iteration": 3})
    s.on_trial_complete("d", {METRIC: 20.0, "cost/cpu_hours": 0.02, "training_iteration": 3})  # dominated by c
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] + [TrialState.COMPLETE] * 3
    assert [t.values for t in study.trials[1:]] == [[23.0, 0.03], [21.0, 0.01], [20.0, 0.02]]
    assert sorted(t.number for t in study.best_trials) == [1, 2]


def test_settle_study_tells_both_objectives(tmp_path):
    from types import SimpleNamespace

    from search.tuner import optuna_storage, settle_study

    cfg = load_search_config("toy", [f"storage={tmp_path}", "name=s", "objectives=[average, cost]"])
    (tmp_path / "s").mkdir()
    study = optuna.create_study(study_name="s", storage=optuna_storage(cfg), directions=["maximize", "minimize"])
    study.ask()
    done = SimpleNamespace(config={"optuna_trial": 0}, error=None,
                           metrics={"training_iteration": 9, METRIC: 42.0, "cost/cpu_hours": 0.5})
    settle_study(cfg, [done], max_t=9)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.COMPLETE and trial.values == [42.0, 0.5]


def test_summary_table_names_each_column_by_what_it_averages_and_marks_the_front():
    """The validation column averages the targets with a validation split (6 here), the test column all nine (so
    it is XTREME); with a cost objective the Pareto front is marked * and a cost column appears."""
    from rich.console import Console

    from search.summary import summary_table

    scores = {t: 50.0 for t in ("xnli", "pawsx", "udpos", "panx", "mlqa", "bucc2018")}
    trial = {"state": "COMPLETE", "test_average": 40.0, "test_xtreme": 40.0, "targets": scores}
    summary = {"name": "s", "cost_metric": "cost/cpu_hours", "trials": [{**trial, "number": 0, "mixture": {}, "average": 50.0, "cost": 0.01},
                                       {**trial, "number": 1, "mixture": {"mnli": 1.0}, "average": 55.0, "cost": 0.02}],
               "pareto_front": [{"number": 0}, {"number": 1}]}
    console = Console(record=True, width=250)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "val avg of 6" in text and "test XTREME" in text and "cpu-hours" in text
    assert "1*" in text and "0*" in text
    summary["pareto_front"] = None
    console = Console(record=True, width=250)
    console.print(summary_table(summary))
    assert "*" not in console.export_text().split("\n", 2)[2] and "cpu-hours" not in console.export_text()


def test_concurrency_null_takes_as_many_trials_as_the_cluster_holds(monkeypatch):
    """max_concurrent_trials: null (the paper and mixture presets): the cluster's resources over one trial's needs."""
    import ray

    from search.tuner import concurrency

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 128.0, "GPU": 11.0})
    assert concurrency(load_search_config("paper")) == 11  # 8 CPUs + 1 GPU per trial: the GPUs bind
    assert concurrency(load_search_config("paper", ["resources={cpu: 16, gpu: 1}"])) == 8  # now the CPUs do
    assert concurrency(load_search_config("paper", ["max_concurrent_trials=3"])) == 3
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    assert concurrency(load_search_config("paper")) == 1  # (check_resources refuses a trial that cannot be placed)


def test_scaling_gain_interval_uses_students_t_at_any_number_of_seeds():
    """Paired gains over 20 seeds: the half-width is t(0.975, 19) = 2.093 standard errors, not the normal's 1.96
    (the lookup table it replaces fell back to 1.96 beyond 10 seeds)."""
    import math

    import numpy as np

    from search.scaling import gain_stats

    rng = np.random.default_rng(0)
    base = {s: float(v) for s, v in enumerate(rng.normal(50, 1, 20))}
    config = {s: v + 1.0 + float(rng.normal(0, 0.5)) for s, v in base.items()}
    stats = gain_stats(config, base)
    diffs = np.array([config[s] - base[s] for s in range(20)])
    se = diffs.std(ddof=1) / math.sqrt(20)
    assert stats["n"] == 20 and (stats["high"] - stats["low"]) / 2 == pytest.approx(2.093 * se, rel=1e-3)


def test_model_card_metadata_reads_back_as_the_hub_reads_it():
    """`xstilts export`'s card (huggingface_hub.ModelCard): canonical base model id, licence, languages of the
    scored targets, datasets, and every per-target score as a model-index result that parses back."""
    from huggingface_hub import ModelCard

    from search.export import model_card

    summary = {"name": "rep", "mlflow": {"experiment": "x"}}
    trial = {"number": 1, "state": "COMPLETE", "mlflow_run_id": "abc", "mixture": {"mnli": 1.0}, "average": 60.0,
             "test_average": 58.0, "targets": {"xnli": 61.234, "pawsx": 58.0, "udpos": 70.0, "panx": 65.0, "mlqa": 50.0}}
    card = ModelCard(model_card(summary, trial, {"seed": "0"}, "xlm-roberta-large", {"xnli": 60.1, "tatoeba": 40.0}))
    data = card.data
    assert data.base_model == "FacebookAI/xlm-roberta-large" and data.license == "mit"
    assert {"en", "sw", "ur"} <= set(data.language) and "nyu-mll/glue" in data.datasets  # XNLI's, MNLI's
    got = {(r.dataset_name, r.dataset_split): r.metric_value for r in data.eval_results}
    assert got == {("xnli", "validation"): 61.23, ("pawsx", "validation"): 58.0, ("udpos", "validation"): 70.0,
                   ("panx", "validation"): 65.0, ("mlqa", "validation"): 50.0, ("xnli", "test"): 60.1,
                   ("tatoeba", "test"): 40.0}  # (three targets from google/xtreme: each its own result, by config)
    assert len(card.data.to_dict()["model-index"][0]["results"]) == 7
    toy = ModelCard(model_card(summary, trial, {}, "toy")).data
    assert toy.base_model is None and toy.language is None  # the toy is no Hub model and speaks no real language


def test_the_ray_experiment_is_named_after_the_search(tmp_path):
    """`<search>/ray/<name>/` (Ray's tools and TensorBoard show the search's name); a search started under the
    older layout (`<search>/ray/tuner.pkl`) resumes where it is."""
    from search.tuner import experiment_dir, search_dir

    cfg = load_search_config(None, [f"storage={tmp_path}", "name=mixtures-a"])
    assert experiment_dir(cfg) == search_dir(cfg) / "ray" / "mixtures-a"
    (search_dir(cfg) / "ray").mkdir(parents=True)
    (search_dir(cfg) / "ray" / "tuner.pkl").write_bytes(b"")
    assert experiment_dir(cfg) == search_dir(cfg) / "ray"


def test_library_chatter_goes_to_the_search_log_not_the_console(tmp_path, capfd):
    """Ray's, MLflow's (its own stream object) and Optuna's messages land in `<search>/ray-driver.log` — those said
    before the folder may be written (a refused search writes nothing) are held and written there then; a second
    call (a proxy search's second stage) moves them to its own file, not to both."""
    import logging

    import mlflow  # noqa: F401  (installs MLflow's console handler, as in a search)
    import optuna

    from search.run import LIBRARY_LOGGERS, libraries_log_to

    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in LIBRARY_LOGGERS}
    try:
        optuna.logging.enable_default_handler()
        libraries_log_to(None)  # before the search folder may be written: held in memory
        logging.getLogger("ray").warning("said before the folder existed")
        libraries_log_to(None)  # (again after ray.init: the same buffer)
        assert not list(tmp_path.iterdir())
        libraries_log_to(tmp_path / "a.log")
        for name in ("ray.tune", "mlflow.store.db.utils", "optuna.storages"):
            logging.getLogger(name).warning("chatter from %s", name)
        libraries_log_to(tmp_path / "b.log")
        logging.getLogger("mlflow").warning("second stage")
    finally:
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers, logging.getLogger(name).propagate = handlers, propagate
    out, err = capfd.readouterr()
    assert "chatter" not in out + err and "second stage" not in out + err, err
    first = (tmp_path / "a.log").read_text()
    assert all(f"chatter from {n}" in first for n in ("ray.tune", "mlflow.store.db.utils", "optuna.storages"))
    assert "said before the folder existed" in first and "said before" not in out + err
    assert "second stage" not in first and "second stage" in (tmp_path / "b.log").read_text()
