"""End-to-end searches: Ray local, a SIGKILLed driver resumed, fan-out over a placement group (the two-node
cluster with a tracking server, and every other fault, is in test_faults.py).

Each search runs in its own `xstilts search` process, so Ray starts and stops with it. Everything a test
starts (Ray nodes, an MLflow server) is stopped by PID. Slow: run with  pytest tests/test_search.py
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from helpers import free_port, trials_accounted, wait_http

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
N = 4


def search_args(tmp: Path, toy_dir: Path, cache: Path, name: str, uri: str, *extra: str, n: int = N) -> list[str]:
    pipeline = [f"data_dir={toy_dir}", f"cache_dir={cache}", "intermediate.steps=60", "targets=[tatoeba,xnli,pawsx]",
                "target.max_eval_examples=60", "target.epochs={xnli: 2, pawsx: 2}", "target.max_train_examples=100"]
    return [sys.executable, "-m", "search.cli", "search", str(ROOT / "configs/search/toy.yaml"), f"name={name}",
            f"storage={tmp / 'searches'}", f"num_samples={n}", "max_concurrent_trials=2",
            "overrides=" + json.dumps(pipeline), f"tracking_uri={uri}", "scheduler={grace_period: 2}", *extra]


def children(uri: str, experiment: str) -> tuple[list, list]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("xstilts.role") == "search"]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == (parents[0].info.run_id if parents else None)]
    return parents, kids


def check_search(tmp: Path, name: str, uri: str, n: int = N) -> dict:
    """N trials in Optuna (finished, pruned ones as pruned), Ray and MLflow; no duplicates; the summary's best.
    A trial a killed driver lost (no Ray trial to resume it) is FAIL in Optuna, its run FAILED in MLflow, and
    its parameters ran again as a new trial (`retry_of`)."""
    root = tmp / "searches" / name
    summary = json.loads((root / "summary.json").read_text())
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'optuna.db'}")
    done = trials_accounted(study, n)
    failed = {t.number for t in study.trials} - {t.number for t in done}
    ray_trials = [d for d in (root / "ray" / name).iterdir() if d.is_dir()]
    assert n <= len(ray_trials) <= n + len(failed)
    parents, kids = children(uri, f"xstilts-search-{name}")
    assert len(parents) == 1 and parents[0].info.run_id == summary["mlflow"]["parent_run_id"]
    lost = [k for k in kids if int(k.data.tags["optuna.trial"]) in failed]
    kids = [k for k in kids if k not in lost]
    assert all(k.info.status == "FAILED" for k in lost)
    numbers = sorted(int(k.data.tags["optuna.trial"]) for k in kids)
    assert numbers == sorted(t.number for t in done), numbers  # one run per trial, no duplicates
    assert all("validation/average" in k.data.metrics and k.info.status == "FINISHED" for k in kids)
    context = {k: v for k, v in parents[0].data.tags.items() if k.startswith("mlflow.source") or k == "mlflow.user"}
    assert "mlflow.user" in context and all(k.data.tags.items() >= context.items() for k in kids)  # the driver's
    assert all(not any(p.startswith(("intermediate_lr", "target_lr")) for p in k.data.params) for k in kids)
    assert all(k.data.metrics["system/process_peak_memory_megabytes"] > 50 for k in kids)  # a trial's process
    complete = {t.number: t.value for t in study.trials if t.state == TrialState.COMPLETE}
    assert summary["best"]["number"] == max(complete, key=complete.get)
    assert summary["trials"][0]["mixture"] == {} and summary["trials"][0]["seeded"]  # the baseline, seeded first
    assert sorted(t["retry_of"] for t in summary["trials"] if "retry_of" in t) == sorted(failed)
    return summary


def trained_tasks(params: dict) -> set[str]:
    """The intermediate tasks a trial's run says it trained on (`mix/<task>` > 0)."""
    return {k.split("/", 1)[1] for k, v in params.items() if k.startswith("mix/") and float(v) > 0}


def test_toy_search_end_to_end(tmp_path, toy_dir, cache):
    """The toy search with finalists=1: 4 trials (2 seeded) run XNLI and PAWS-X as rungs and leave Tatoeba (test
    only, retrieval) to the finalists — the seeded points and the best other trial by validation —, which log it
    to their own runs; a --resume of the finished search runs the finalist work again, from the cache."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = search_args(tmp_path, toy_dir, cache, "e2e", uri, "finalists=1", "--json", str(tmp_path / "s.json"))
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = check_search(tmp_path, "e2e", uri)
    assert json.loads((tmp_path / "s.json").read_text()) == summary
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{tmp_path / 'searches/e2e/optuna.db'}")
    complete = {t.number: t.value for t in study.trials if t.state == TrialState.COMPLETE}
    assert all(max(t.intermediate_values) == 2 for t in study.trials if t.state == TrialState.COMPLETE)
    best_free = max((n for n in complete if n >= 2), key=lambda n: (complete[n], -n))
    assert summary["finalists"] == [n for n in (0, 1) if n in complete] + [best_free]
    tatoeba = "target/tatoeba/score"
    from mlflow import MlflowClient

    for kid in children(uri, "xstilts-search-e2e")[1]:  # the task sources as dataset inputs, by context
        inputs = MlflowClient(uri).get_run(kid.info.run_id).inputs.dataset_inputs
        used = {(i.dataset.name.split(":")[0], {t.key: t.value for t in i.tags}["mlflow.data.context"]) for i in inputs}
        assert {("xnli", "target"), ("pawsx", "target"), ("tatoeba", "target")} <= used, used
        mixture = trained_tasks(kid.data.params)
        assert {t for t, c in used if c == "intermediate"} == mixture, (used, kid.data.params)

    def finalist_scores():
        scores = {}
        for kid in children(uri, "xstilts-search-e2e")[1]:
            n, m = int(kid.data.tags["optuna.trial"]), kid.data.metrics
            finalist = n in summary["finalists"]
            assert (kid.data.tags.get("xstilts.finalist") == "true") == finalist
            assert (tatoeba in m) == ("average" in m) == finalist, (n, sorted(m))  # no partial test averages
            scores.update({n: m[tatoeba]} if finalist else {})
            history = MlflowClient(uri).get_metric_history(kid.info.run_id, "validation/average")
            assert sorted(h.step for h in history) == [1, 2]  # validation: the trial's rungs only
        return scores

    before = finalist_scores()
    # Optuna's trials name their objective and link to their Ray trial and MLflow run; Tune has per-target scores
    assert study.metric_names == ["validation/average"]
    runs = {int(k.data.tags["optuna.trial"]): k for k in children(uri, "xstilts-search-e2e")[1]}
    for t in study.trials:
        assert t.user_attrs["mlflow_run_id"] == runs[t.number].info.run_id
        assert t.user_attrs["ray_trial_id"] == runs[t.number].data.tags["ray.trial_id"]
    results = [json.loads(line) for f in (tmp_path / "searches/e2e/ray/e2e").glob("*/result.json")
               for line in f.read_text().splitlines()]
    assert results and all({"validation/target/xnli/score", "validation/target/pawsx/score"} <= set(r)
                           for r in results if r["rung"] == 2)
    assert {t["number"] for t in summary["trials"] if t["finalist"]} == set(summary["finalists"])
    assert all(t["test_average"] is not None for t in summary["trials"] if t["finalist"])
    again = subprocess.run([*args[:-2], "--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert finalist_scores() == before
    from search.report import make_report  # the test tables cover the finalists, and say so

    report = make_report(tmp_path / "searches" / "e2e", "test", log_to_mlflow=False)
    assert report["covers"] == {"finalists": summary["finalists"], "trials": N}
    assert {int(r["trial"]) for r in report["rows"]} <= set(summary["finalists"]) and "tatoeba" in report["targets"]
    assert "cover the search's 3 finalists" in (tmp_path / "searches/e2e/report/report.md").read_text()
    assert "best mixtures" in out.stdout
    best = subprocess.run([sys.executable, "-m", "search.cli", "best", str(tmp_path / "searches" / "e2e")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert best.returncode == 0 and f"{summary['best']['average']:.2f}" in best.stdout
    # every trial recorded the cache entries it uses; a dry-run prune keeps the best trial's
    folder = tmp_path / "searches" / "e2e"
    recorded = {int(f.stem): json.loads(f.read_text()) for f in (folder / "entries").glob("*.json")}
    assert set(recorded) == {t["number"] for t in summary["trials"]}
    assert all(r["cache_dir"] == str(cache) for r in recorded.values())
    dry = subprocess.run([sys.executable, "-m", "search.cli", "cache", "prune", str(folder), "--top", "0",
                          "--dry-run", "--json", str(tmp_path / "prune.json")], capture_output=True, text=True,
                         cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr[-2000:]
    kept = set(json.loads((tmp_path / "prune.json").read_text())["kept"])
    best_entries = set(recorded[summary["best"]["number"]]["entries"])
    assert best_entries <= kept and any(e.startswith("phase3-") for e in best_entries)


def test_score_and_cost_search_names_its_pareto_front(tmp_path, toy_dir, cache):
    """objectives=[average, cost]: Optuna's study has two directions, every finished trial carries its
    (average, CPU-hours), and the summary's Pareto front is exactly the finished trials no other beats on both."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run(search_args(tmp_path, toy_dir, cache, "mo", uri, "objectives=[average, cost]", n=3),
                         capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    root = tmp_path / "searches" / "mo"
    summary = json.loads((root / "summary.json").read_text())
    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{root / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = [t for t in summary["trials"] if t["state"] == "COMPLETE"]
    assert done and all(len(t.values) == 2 for t in study.trials if t.state == TrialState.COMPLETE)
    by_number = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
    for t in done:  # the summary's average and cost are what Optuna was told
        assert [t["average"], t["cost"]] == pytest.approx(by_number[t["number"]])
    dominated = {a["number"] for a in done for b in done
                 if b["average"] >= a["average"] and b["cost"] <= a["cost"]
                 and (b["average"], b["cost"]) != (a["average"], a["cost"])}
    assert {p["number"] for p in summary["pareto_front"]} == {t["number"] for t in done} - dominated
    assert summary["objectives"] == ["average", "cost"] and "Pareto front" in out.stdout


def test_repeats_report_mean_and_spread(tmp_path, toy_dir, cache):
    """repeats=2: each configuration runs two seeds in lockstep; every rung reports their mean (so ASHA can
    stop repeated configurations too), the spread and each seed's own average are logged."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = search_args(tmp_path, toy_dir, cache, "rep", uri, "repeats=2")
    args[args.index(f"num_samples={N}")] = "num_samples=2"
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    _, kids = children(uri, "xstilts-search-rep")
    assert len(kids) == 2
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    for k in kids:
        m = k.data.metrics
        assert k.data.params["repeats"] == "2" and "validation/average_std" in m
        seeds = [m["seed/0/validation/average"], m["seed/1/validation/average"]]
        assert m["validation/average"] == pytest.approx(sum(seeds) / 2)
        assert m["validation/average_std"] == pytest.approx(abs(seeds[0] - seeds[1]) / 2)
        history = client.get_metric_history(k.info.run_id, "validation/average")
        assert [h.step for h in history] == [1, 2, 3]  # one rung per target, also with repeats
    study = optuna.load_study(study_name="rep", storage=f"sqlite:///{tmp_path / 'searches/rep/optuna.db'}")
    by_number = {int(k.data.tags["optuna.trial"]): k.data.metrics["validation/average"] for k in kids}
    assert {t.number: t.value for t in study.trials} == pytest.approx(by_number)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def _finished_trials(db: Path, name: str) -> int:
    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    except Exception:
        return 0
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


def test_a_trial_its_driver_lost_is_failed_and_run_again(tmp_path):
    """A driver killed after Optuna asked a trial but before Ray saved it leaves that Optuna trial RUNNING with
    no Ray trial to resume it (a zombie). `--resume` tells it FAIL and runs its parameters again as a new trial,
    still seeded, `retry_of` in the study and the summary; the zombie's MLflow run is
    closed FAILED. Trials replay the recorded toy grid (search/replay.py): the driver is real, nothing trains."""
    import functools

    from mlflow import MlflowClient

    from search.config import load_search_config
    from search.searcher import StudySearcher
    from search.space import TrialSpec, define_space
    from search.trainable import METRIC
    from search.tuner import optuna_storage, search_dir
    from trainables.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record = ROOT / "benchmarks" / "records" / "toy_grid.json"
    overrides = ["name=lost", f"storage={tmp_path / 'searches'}", "num_samples=4", "max_concurrent_trials=2",
                 f"tracking_uri={uri}", f"replay={{record: {record}, time_scale: 0.01}}"]
    cfg = load_search_config("toy", overrides)
    search_dir(cfg).mkdir(parents=True)
    crashed = StudySearcher(functools.partial(define_space, cfg=cfg), metric=METRIC, mode="max", max_t=3,
                            points_to_evaluate=[TrialSpec(mixture=p).to_params(cfg.candidates)
                                                for p in cfg.points_to_evaluate],
                            storage=optuna_storage(cfg), study_name=cfg.name)
    assert crashed.suggest("gone")["seeded"]  # the baseline, asked; its trial made its run; then the driver died
    zombie_run = MlflowTracker(uri, cfg.experiment_name, "trial-0",
                               tags={"ray.trial_id": "gone", "optuna.trial": "0", "xstilts.search": "lost"}).run_id
    # (without --resume: the driver died before it wrote search.json; the searcher's start is the same code)
    out = subprocess.run([sys.executable, "-m", "search.cli", "search", "toy", *overrides],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = check_search(tmp_path, "lost", uri)
    study = optuna.load_study(study_name="lost", storage=optuna_storage(cfg))
    zombie, retry = study.trials[0], next(t for t in study.trials if t.user_attrs.get("retry_of") == 0)
    assert zombie.state == TrialState.FAIL and retry.params == zombie.params and retry.user_attrs["seeded"]
    last = max(max(t.intermediate_values) for t in study.trials if t.intermediate_values)
    assert retry.state == TrialState.COMPLETE and max(retry.intermediate_values) == last  # (ASHA's sparing of
    # seeded trials by their config's `seeded`: tests/test_search_units.py::test_asha_keeps_its_rungs_across_a_restore)
    assert retry.number == 1  # next: before the other seeded point (2), as the uninterrupted search's order
    assert [t["number"] for t in summary["trials"] if t["seeded"]] == [0, 1, 2]
    assert MlflowClient(uri).get_run(zombie_run).info.status == "FAILED"


def test_sigkill_driver_then_resume(tmp_path, toy_dir, cache):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = search_args(tmp_path, toy_dir, cache, "crash", uri)
    driver = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    db = tmp_path / "searches" / "crash" / "optuna.db"
    deadline = time.time() + 600
    while _finished_trials(db, "crash") < 1 and time.time() < deadline and driver.poll() is None:
        time.sleep(1)
    entries_before = {p: p.stat().st_mtime for p in cache.glob("phase2-*")  # published ones (not a build in
                      if (p / "xstilts-manifest.json").is_file()}      # progress, which the kill leaves behind)
    assert driver.poll() is None, "the search finished before it could be killed"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(3)  # let Ray's processes notice their driver is gone
    resumed = subprocess.run(args + ["--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_search(tmp_path, "crash", uri)
    for entry, mtime in entries_before.items():  # finished phase-2 work reused, not redone
        assert entry.stat().st_mtime == mtime


def _stop(procs):
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_fan_out_targets_over_a_placement_group(tmp_path, toy_dir, cache):
    """resources.fan_out=2: the trial's fine-tuned targets run as Ray tasks in its extra bundles, and give
    the scores a sequential in-process run of the same configuration gives."""
    import shutil

    import torch

    from trainables.config import load_config
    from trainables.pipeline import phase3_entry, run_pipeline

    pipeline = [f"data_dir={toy_dir}", f"cache_dir={cache}", "intermediate.steps=60", "targets=[xnli,pawsx]",
                "target.max_eval_examples=60", "target.epochs={xnli: 2, pawsx: 2}", "target.max_train_examples=100",
                "target.eval_batch_size=48", "intermediate.mixture={mnli: 1.0}", "tracking.enabled=false"]
    cfg = load_config(ROOT / "configs/pipeline/toy.yaml", pipeline)
    sequential = run_pipeline(cfg, log=lambda *a: None)
    for name in ("xnli", "pawsx"):
        shutil.rmtree(phase3_entry(cfg, name, sequential["phase2"]["dir"], toy_dir, torch.device("cpu")).path)  # recompute
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [sys.executable, "-m", "search.cli", "search", "name=fan", f"storage={tmp_path / 'searches'}",
            "num_samples=1", "max_concurrent_trials=1", "intermediate_lr=null", "points_to_evaluate=[{mnli: 1.0}]",
            "candidates=[mnli]", "overrides=" + json.dumps(pipeline[:-2]), f"tracking_uri={uri}",
            "resources={cpu: 0.5, gpu: 0, fan_out: 2}", "scheduler={enabled: false}"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    _, kids = children(uri, "xstilts-search-fan")
    (kid,) = kids
    for name in ("xnli", "pawsx"):
        assert kid.data.metrics[f"validation/target/{name}/score"] == pytest.approx(
            sequential["validation"]["targets"][name]["score"], abs=1.0)
    # one trial can never need more than the cluster has: refused up front, not left PENDING forever
    too_big = subprocess.run(args[:4] + ["name=big", f"storage={tmp_path / 'searches'}", "resources={cpu: 64}",
                                         f"tracking_uri={uri}", "overrides=" + json.dumps(pipeline[:-2])],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert too_big.returncode == 2 and "one trial needs 64 CPU" in too_big.stderr
