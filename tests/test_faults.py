"""Faults a long search meets on a shared cluster, injected for real; each by the PID of a process the test
started (or a descendant of one), never by name. Slow: run with  pytest tests/test_faults.py

  - a two-node cluster: a trial's worker SIGKILLed twice, the MLflow server down for 30 s, then the second
    node killed → N trials, none failed, one FINISHED run per Optuna trial, no metric lost;
  - the driver SIGKILLed while a phase-2 cache entry is being written → `--resume` finishes, no broken entry
    used, and ASHA stops the same trials at the same rungs as the uninterrupted search;
  - the cache directory full (a small tmpfs) → one clear error, exit 2; after space is freed `--resume` finishes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from helpers import free_port, trials_accounted, wait_http
from test_search import ROOT, _stop, check_search, children, search_args

pytestmark = pytest.mark.slow


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite backend; stopped (its whole process group, by the PID of the
    process the test started) and started again on the same port."""

    def __init__(self, folder: Path, env: dict):
        self.folder, self.env, self.port, self.proc = folder, env, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                      f"sqlite:///{self.folder / 'server.db'}", "--host", "127.0.0.1",
                                      "--port", str(self.port), "--workers", "1"], env=self.env, cwd=self.folder,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        assert wait_http(f"{self.uri}/health"), "the MLflow server did not start"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc: each process's parent)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def _running_trials(root: Path, under: int, checkpointed: bool = True) -> list[tuple[str, int]]:
    """(trial id, pid) of live trial processes started under the process `under` (a node's `ray start`) that
    have reported at most their first rung — so ASHA (grace period 2) cannot have stopped them and a kill lands
    mid-target; with `checkpointed`, exactly their first (the kill then comes after a checkpoint)."""
    procs = _descendants(under)
    out = []
    for f in sorted((root / "pids").glob("*")) if (root / "pids").is_dir() else []:
        record = json.loads(f.read_text())
        checkpoints = {c.name for c in (root / "ray" / root.name / f.name).glob("checkpoint_*")}
        first_only = checkpoints == {"checkpoint_000000"} if checkpointed else checkpoints <= {"checkpoint_000000"}
        if record["running"] and record["pid"] in procs and first_only:
            out.append((f.name, record["pid"]))
    return out


def _wait_for(what: str, probe, driver: subprocess.Popen, seconds: float = 600):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = probe()
        if found:
            return found
        assert driver.poll() is None, f"the search ended before {what}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_cluster_faults_worker_kills_tracking_outage_node_loss(tmp_path, toy_dir, cache):
    n = 6
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=200000000",
              "--disable-usage-stats"]
    procs, server = [], MlflowServer(tmp_path, env)
    try:
        procs.append(subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={port}",
                                       "--include-dashboard=false", *common], env=env, cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(6)
        procs.append(subprocess.Popen([ray_bin, "start", "--block", f"--address=127.0.0.1:{port}", *common], env=env,
                                      cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        head, worker = procs
        server.start()
        address = ["--address", f"127.0.0.1:{port}"]
        for _ in range(30):  # the second node registers a few seconds after the head
            status = subprocess.run([ray_bin, "status", f"--address=127.0.0.1:{port}"], env=env,
                                    capture_output=True, text=True)
            if "/2.0 CPU" in status.stdout:
                break
            time.sleep(2)
        # 0: only the driver writes MLflow (search/tracking.py), so a SQLite store on its disk serves both nodes
        # (trials replay the recorded toy grid: the driver and the cluster are real, nothing trains)
        sqlite, record = f"sqlite:///{tmp_path / 'driver-only.db'}", ROOT / "benchmarks" / "records" / "toy_grid.json"
        local = subprocess.run([sys.executable, "-m", "search.cli", "search", "toy", "name=sqlite-2-nodes",
                                f"storage={tmp_path / 'searches'}", "num_samples=4", "max_concurrent_trials=2",
                                f"tracking_uri={sqlite}", f"replay={{record: {record}, time_scale: 0.05}}"] + address,
                               capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
        assert local.returncode == 0, local.stderr[-3000:]
        check_search(tmp_path, "sqlite-2-nodes", sqlite, n=4)
        ran_on = {json.loads(p.read_text())["node"] for p in (tmp_path / "searches" / "sqlite-2-nodes" / "pids").glob("[!.]*")}
        assert len(ran_on) == 2, ran_on  # trials on both nodes, every run written

        name, root = "faults", tmp_path / "searches" / "faults"
        log = open(tmp_path / "driver.log", "w")
        driver = subprocess.Popen(search_args(tmp_path, toy_dir, cache, name, server.uri, "max_failures=2", n=n)
                                  + address, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        killed = []
        for k in range(2):  # 1, 2: a trial's worker process on the head node, mid-target
            trial, pid = _wait_for(f"worker kill {k + 1}",
                                   lambda: [t for t in _running_trials(root, head.pid) if t[1] not in
                                            {p for _, p in killed}][:1], driver)[0]
            head_node = json.loads((root / "pids" / trial).read_text())["node"][:12]
            os.kill(pid, signal.SIGKILL)
            killed.append((trial, pid))
        trial, pid = _wait_for("the second node's trial", lambda: _running_trials(root, worker.pid, False)[:1],
                               driver)[0]
        lost_node, lost_trial = json.loads((root / "pids" / trial).read_text())["node"][:12], trial
        assert lost_node != head_node  # trials ran on both nodes
        for p in _descendants(worker.pid) | {worker.pid}:  # 3: the second node dies with its trial
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed.append((trial, pid))
        server.stop()  # 4: the tracking server down for 30 s while the lost trial runs again on the head (the
        assert driver.poll() is None, "the search ended before the tracking outage"  # search may end meanwhile:
        time.sleep(30)  # the driver then waits for the server)
        server.start()
        assert driver.wait(timeout=1500) == 0, (tmp_path / "driver.log").read_text()[-3000:]

        summary = check_search(tmp_path, name, server.uri, n=n)  # N trials, none failed, one FINISHED run each
        assert summary["errors"] == 0
        for trial, pid in killed:  # each killed trial was taken up again (a new process) and finished
            assert json.loads((root / "pids" / trial).read_text())["pid"] != pid
        _, kids = children(server.uri, f"xstilts-search-{name}")
        # a run is tagged with the node that finished it (MLflow keeps a tag's latest value): the trial lost with
        # the second node was taken up on the head; trials that finished on the second node before it died keep it
        nodes = {k.data.tags["ray.trial_id"]: k.data.tags["node"] for k in kids}
        assert nodes[lost_trial] == head_node and set(nodes.values()) <= {head_node, lost_node}, nodes
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'optuna.db'}")
        from mlflow import MlflowClient

        client = MlflowClient(server.uri)
        for kid in kids:  # no metric lost: every rung Optuna saw is in MLflow, with its value
            trial = study.trials[int(kid.data.tags["optuna.trial"])]
            if trial.state == TrialState.FAIL:  # a trial the driver lost (none here: the driver is not killed)
                continue
            history = {m.step: m.value for m in client.get_metric_history(kid.info.run_id, "validation/average")}
            assert history == pytest.approx(trial.intermediate_values), (kid.data.tags, history)
    finally:
        server.stop()
        _stop(procs)


def _rungs_by_mixture(root: Path, name: str) -> dict[str, tuple[str, int]]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'optuna.db'}")
    return {json.dumps(t.params, sort_keys=True): (t.state.name, len(t.intermediate_values)) for t in study.trials}


def test_driver_killed_while_phase2_is_written_then_asha_stops_the_same(tmp_path, toy_dir, cache):
    """A sequential seeded search (fixed configurations, ASHA on): killed while a phase-2 entry is half
    written and resumed, it prunes the same trials at the same rungs as the same search run straight."""
    points = "[{mnli: 1.0}, {qqp: 1.0}, {squad_v1: 1.0}, {sst2: 1.0}, {mnli: 0.5, sst2: 0.5}]"
    extra = ["max_concurrent_trials=1", f"points_to_evaluate={points}",
             "scheduler={grace_period: 1, reduction_factor: 2, protect_seeded: false}"]

    def args(name: str, cache: Path) -> list[str]:
        out = search_args(tmp_path, toy_dir, cache, name, f"sqlite:///{tmp_path / 'mlflow.db'}", *extra, n=5)
        out.remove("max_concurrent_trials=2")
        return out

    shared = cache
    straight = subprocess.run(args("straight", _seed_cache(tmp_path / "cache-a", shared)), capture_output=True,
                              text=True, cwd=tmp_path,
                              timeout=1200)
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = _rungs_by_mixture(tmp_path / "searches" / "straight", "straight")
    assert any(state == "PRUNED" for state, _ in expected.values()), expected  # ASHA had something to do

    cache = _seed_cache(tmp_path / "cache-b", shared)
    crash = args("crash", cache)
    driver = subprocess.Popen(crash, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished = lambda: len(list(cache.glob("phase2-*/xstilts-manifest.json")))  # noqa: E731
    half = _wait_for("a phase-2 entry being written after one was finished",
                     lambda: finished() >= 1 and list(cache.glob("phase2-*.tmp-*")), driver, seconds=900)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(3)  # let Ray's processes notice their driver is gone
    resumed = subprocess.run(crash + ["--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _rungs_by_mixture(tmp_path / "searches" / "crash", "crash") == expected
    assert half and not list(cache.glob("*.tmp-*"))  # the half-written entry was dropped, not used
    for entry in cache.glob("phase2-*"):
        assert (entry / "xstilts-manifest.json").exists()


def _seed_cache(cache: Path, shared: Path) -> Path:
    """A fresh cache holding only the session's toy model (phase 1 is not what these tests exercise)."""
    import shutil

    cache.mkdir(parents=True, exist_ok=True)
    for entry in shared.glob("toy-model-*"):
        if (entry / "xstilts-manifest.json").exists():
            shutil.copytree(entry, cache / entry.name)
    return cache


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_full_cache_disk_then_resume(tmp_path, toy_dir, cache):
    shared, cache = cache, tmp_path / "cache"
    if os.geteuid() != 0 or not _mount_tmpfs(cache, "5m"):
        pytest.skip("this machine does not let a test mount a tmpfs (needs root and CAP_SYS_ADMIN)")
    try:
        _seed_cache(cache, shared)
        # 5 MB: the toy model (2.9 MB) fits, a phase-2 encoder (2.8 MB) does not
        args = search_args(tmp_path, toy_dir, cache, "full", f"sqlite:///{tmp_path / 'mlflow.db'}", "max_failures=0",
                           "points_to_evaluate=[{mnli: 1.0}]", n=2)
        full = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=900)
        assert full.returncode == 2, full.stderr[-3000:]
        lines = [line for line in full.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "disk is full" in lines[0] and "--resume" in lines[0], full.stderr[-3000:]
        assert "Traceback" not in full.stderr
        assert not list(cache.glob("*.tmp-*"))  # nothing half-written left
        subprocess.run(["mount", "-o", "remount,size=64m", str(cache)], check=True)  # space freed
        resumed = subprocess.run(args + ["--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=900)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        study = optuna.load_study(study_name="full", storage=f"sqlite:///{tmp_path / 'searches/full/optuna.db'}")
        trials_accounted(study, 2)
    finally:
        subprocess.run(["umount", "-l", str(cache)], capture_output=True)
