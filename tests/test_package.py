"""xstilts as an installed package: presets by name from any folder, XSTILTS_HOME / XSTILTS_CACHE, a wheel in a
fresh environment outside the checkout, and a search launched with `ray job submit` on a real local cluster.

Run: pytest tests/test_package.py   (the wheel and cluster tests are slow)
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import free_port, wait_http
from trainables.config import load_config
from trainables.errors import XstiltsError
from trainables.presets import find, listing

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def test_presets_are_listed_and_found_by_name(tmp_path, monkeypatch):
    names = {(p["kind"], p["name"]) for p in listing()}
    assert {("pipeline", "toy"), ("search", "toy"), ("search", "paper"), ("search", "scaling_toy")} <= names
    assert all(p["description"] for p in listing())
    monkeypatch.chdir(tmp_path)  # far from the checkout
    where, text = find("paper", "search")
    assert where == "xstilts_configs/search/paper.yaml" and "num_samples: 11" in text
    assert find("configs/pipeline/toy.yaml", "pipeline")[0] == "xstilts_configs/pipeline/toy.yaml"
    (tmp_path / "toy.yaml").write_text("name: mine\n")
    assert find("toy", "pipeline") == ("toy.yaml", "name: mine\n")  # a file here wins over the packaged one
    with pytest.raises(XstiltsError, match="known search presets: mixture, paper, proxy_toy, scaling, scaling_planted, scaling_toy, toy"):
        find("papr", "search")


def test_relative_paths_follow_xstilts_home_and_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XSTILTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XSTILTS_CACHE", str(tmp_path / "shared-cache"))
    cfg = load_config("toy")
    assert cfg.data_dir == str(tmp_path / "home" / "toy_data") and cfg.output_dir == str(tmp_path / "home" / "runs")
    assert cfg.cache_dir == str(tmp_path / "shared-cache")
    assert load_config("toy", ["cache_dir=mine"]).cache_dir == str(tmp_path / "home" / "mine")  # the command line wins
    monkeypatch.delenv("XSTILTS_HOME")
    monkeypatch.delenv("XSTILTS_CACHE")
    assert load_config("toy").cache_dir == str(tmp_path / ".xstilts" / "cache")  # else the working directory


@pytest.mark.slow
def test_wheel_in_a_fresh_environment_from_an_empty_folder(tmp_path, toy_dir, cache):
    """Build the wheel, install it (without the checkout) into a new venv that borrows only the third-party
    packages of .venv, and run the CLI and the toy preset by name from an empty folder."""
    from trainables.pipeline import base_model

    base_model(load_config("toy", [f"data_dir={toy_dir}", f"cache_dir={cache}"]), toy_dir)  # the shared toy model
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(dist), str(ROOT)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    third_party = next(Path(p) for p in sys.path if p.endswith("site-packages") and (Path(p) / "ray").is_dir())
    (site / "deps.pth").write_text(str(third_party) + "\n")  # a plain path: .venv's editable finder stays off
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                                str(next(dist.glob("xstilts-*.whl")))], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    (venv / "bin" / "xstilts").write_text(f"#!{venv / 'bin' / 'python'}\nfrom search.cli import main\nmain()\n")
    (venv / "bin" / "xstilts").chmod(0o755)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "XSTILTS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    where = subprocess.run([str(venv / "bin/python"), "-c", "import trainables, xstilts_configs; "
                            "print(trainables.__file__, xstilts_configs.__file__)"], capture_output=True, text=True,
                           cwd=empty, env=env)
    assert where.stdout.count(str(site)) == 2, where.stdout + where.stderr  # the wheel's copy, not the checkout
    tasks = subprocess.run([str(venv / "bin/xstilts"), "tasks", "--json"], capture_output=True, text=True, cwd=empty, env=env)
    assert tasks.returncode == 0 and len(json.loads(tasks.stdout)) == 19, tasks.stderr[-1000:]
    presets = subprocess.run([str(venv / "bin/xstilts"), "presets", "--json"], capture_output=True, text=True,
                             cwd=empty, env=env)
    assert {p["name"] for p in json.loads(presets.stdout)} >= {"toy", "paper", "mixture", "scaling_toy"}
    run = subprocess.run([str(venv / "bin/xstilts"), "run", "toy", "targets=[xnli]", "intermediate.steps=20",
                          "target.epochs={xnli: 1}", "target.max_train_examples=50", "tracking.enabled=false",
                          "--json", "out.json"], capture_output=True, text=True, cwd=empty, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (empty / "toy_data" / "xstilts.json").exists()  # written here, where it ran
    assert "phase 1 (toy)" not in run.stdout + run.stderr  # the shared cache's toy model: not rebuilt
    assert f"cache {cache}" in run.stdout and json.loads((empty / "out.json").read_text())["targets"]["xnli"]


@pytest.mark.slow
def test_ray_job_submit_runs_a_search_on_a_cluster(tmp_path, toy_dir, cache):
    """`ray job submit` to a real local cluster (head with its job server, started and stopped by PID): the
    search's trials run on the cluster and its summary lands in the storage it was given."""
    port, dash = free_port(), free_port()
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "XSTILTS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen([str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={port}",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={dash}", "--num-cpus=2", "--object-store-memory=200000000",
                             "--disable-usage-stats"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert wait_http(f"http://127.0.0.1:{dash}/api/version", 120, any_status=True), "the job server did not come up"
        workdir = tmp_path / "job"  # what --working-dir uploads: the presets come with the installed package
        workdir.mkdir()
        pipeline = [f"data_dir={toy_dir}", "intermediate.steps=20", "targets=[xnli,tatoeba]",
                    "target.max_eval_examples=40", "target.epochs={xnli: 1}", "target.max_train_examples=50"]
        submit = subprocess.run(
            [str(VENV_BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir",
             str(workdir), "--", "xstilts", "search", "toy", "name=job", f"storage={tmp_path / 'searches'}",
             f"tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "num_samples=2", "intermediate_lr=null",
             "overrides=" + json.dumps(pipeline)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
        assert submit.returncode == 0, (submit.stdout + submit.stderr)[-3000:]
        assert "succeeded" in submit.stdout.lower()
        summary = json.loads((tmp_path / "searches/job/summary.json").read_text())
        assert len(summary["trials"]) == 2 and summary["best"] is not None
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
