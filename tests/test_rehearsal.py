"""A rehearsal of the first run on a real cluster, on this machine (slow; a few minutes).

- Ray: a head node with no CPUs for trials and a second node started with a clean environment (`env -i` with PATH
  and HOME) in its own working directory (tests/cluster.py): every trial runs there, with nothing of the driver's
  shell but what the search forwards;
- MLflow: a tracking server with MLflow's basic-auth app; its credentials exist only in the driver's environment;
- the Hub: a local stand-in (tests/hub_server.py) serving the toy datasets in the Hub's API shape and counting
  requests; the search's data_dir under its storage holds only the toy corpus and tokenizer at the start;
- storage: one folder both nodes see, holding data, cache and the search.

It shows: the driver prepares the data from the Hub once, before any trial; no trial touches the Hub; trials log
live (a trial's metrics are on the server while the search still runs); every cache entry
is under the storage (nothing under either working directory); and a second submission of the same search from
another working directory recomputes nothing (every phase-2 and phase-3 entry is a cache hit), as does `--resume`.
Run: pytest tests/test_rehearsal.py
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster import TwoNodes
from helpers import free_port, wait_http
from hub_server import HubStandIn, from_layout

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
USER, PASSWORD = "admin", "rehearsal-Secr3t-q4"


def _toy_rows(toy_dir: Path) -> dict:
    import pyarrow.parquet as pq

    return {str(p.relative_to(toy_dir)): pq.read_table(p).to_pylist() for p in toy_dir.rglob("*.parquet")}


def _tiny_model(toy_dir: Path, out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    tok = AutoTokenizer.from_pretrained(str(toy_dir / "tokenizer"))
    torch.manual_seed(0)
    XLMRobertaModel(XLMRobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, pad_token_id=tok.pad_token_id),
                    add_pooling_layer=False).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def _mlflow_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (tmp / "auth.ini").write_text(f"""[mlflow]
default_permission = READ
database_uri = sqlite:///{tmp / 'basic_auth.db'}
admin_username = {USER}
admin_password = {PASSWORD}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
""")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(tmp / "auth.ini"),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                               "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination",
                               str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    assert wait_http(f"{uri}/health", any_status=True)
    return server, uri


def _logged_trial_metrics(uri: str, experiment: str) -> int:
    """Trial runs on the server that already carry the objective (the test process has the credentials)."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return 0
        runs = client.search_runs([exp.experiment_id])
        return sum("validation/average" in r.data.metrics and "ray.trial_id" in r.data.tags for r in runs)
    except Exception as exc:  # the server busy: try again at the next poll
        print(f"poll: {type(exc).__name__}: {exc}"[:300])
        return 0


def _entries(cache: Path) -> dict[str, float]:
    return {p.name: (p / "xstilts-manifest.json").stat().st_mtime for p in cache.glob("phase*-*")
            if (p / "xstilts-manifest.json").exists()}


def test_a_search_on_a_rehearsed_cluster(toy_dir, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    storage, data = shared / "searches", shared / "searches" / "data"
    data.mkdir(parents=True)
    for item in ("mlm", "tokenizer", "xstilts.json"):  # what is not on the Hub: the toy corpus and tokenizer
        (shutil.copytree if (toy_dir / item).is_dir() else shutil.copy)(toy_dir / item, data / item)
    model = _tiny_model(toy_dir, shared / "models" / "tiny")
    hub = HubStandIn(from_layout(_toy_rows(toy_dir))).start()
    server, uri = _mlflow_server(tmp_path)
    driver_wd, second_wd = tmp_path / "driver-wd", tmp_path / "second-wd"
    driver_wd.mkdir()
    second_wd.mkdir()
    pipeline = [f"model.name={model}", "intermediate.steps=30", "intermediate.batch_size=8", "targets=[xnli,pawsx]",
                "target.epochs={xnli: 1, pawsx: 1}", "target.max_train_examples=64", "target.max_eval_examples=40"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "MLFLOW_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"),
               MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=PASSWORD, HF_HUB_DISABLE_TELEMETRY="1")

    clients: list[dict] = []  # the driver's environment as a client of the cluster (its token)

    def search(name: str, cwd: Path, *extra: str) -> subprocess.Popen:
        args = [sys.executable, "-m", "search.cli", "search", f"name={name}", f"storage={storage}",
                f"data_dir={data}", "num_samples=2", "max_concurrent_trials=2", "candidates=[mnli]",
                "points_to_evaluate=[{}, {mnli: 1.0}]", f"tracking_uri={uri}", "resources={cpu: 1}",
                "overrides=" + json.dumps(pipeline), *extra]
        return subprocess.Popen(args, cwd=cwd, env=clients[0], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    try:
        with TwoNodes(tmp_path) as cluster:
            clients.append(cluster.client_env(env))
            first = search("rehearsal", driver_wd, "--address", cluster.address)
            hub_at_first_trial, live = None, 0
            deadline = time.time() + 900
            while first.poll() is None and time.time() < deadline:
                if hub_at_first_trial is None and list((storage / "rehearsal" / "pids").glob("[!.]*")):
                    hub_at_first_trial = hub.count()  # everything the Hub was asked, the driver asked before this
                live = max(live, _logged_trial_metrics(uri, "xstilts-search-rehearsal") if first.poll() is None else 0)
                time.sleep(1)
            out, err = first.communicate(timeout=60)
            assert first.returncode == 0, err[-4000:]
            assert hub_at_first_trial and hub_at_first_trial > 0  # the driver prepared the data from the Hub ...
            assert hub.count() == hub_at_first_trial  # ... and no trial touched it afterwards
            assert "preparing mnli, pawsx, xnli from the Hub" in out + err
            assert live >= 1  # a trial's metrics reached the server while the search was still running
            pids = [json.loads(p.read_text()) for p in (storage / "rehearsal" / "pids").glob("[!.]*")]
            assert len(pids) == 2 and len({p["node"] for p in pids}) == 1  # both on the clean node (the head has no CPUs)
            cache = storage / ".xstilts" / "cache"
            first_entries = _entries(cache)
            assert any(e.startswith("phase2-") for e in first_entries) and any(e.startswith("phase3-") for e in first_entries)
            for wd in (driver_wd, cluster.clean_wd):  # nothing a search keeps lives in a working directory
                assert not (wd / ".xstilts").exists() and not (wd / "runs").exists(), list(wd.iterdir())
            sources = json.loads((data / "xstilts-sources.json").read_text())["sources"]
            assert sources["facebook/xnli"]["sha"] == hub.sha("facebook/xnli")

            hub.reset_counts()  # a second submission, from another working directory
            second = search("rehearsal-again", second_wd, "--address", cluster.address)
            out2, err2 = second.communicate(timeout=900)
            assert second.returncode == 0, err2[-4000:]
            resumed = search("rehearsal", second_wd, "--address", cluster.address, "--resume")
            _, err3 = resumed.communicate(timeout=900)
            assert resumed.returncode == 0, err3[-4000:]
        assert _entries(cache) == first_entries  # nothing recomputed: the same entries, untouched
        assert hub.count() == 0, hub.log
        summary = json.loads((storage / "rehearsal-again" / "summary.json").read_text())
        assert len(summary["trials"]) == 2 and summary["best"] is not None
    finally:
        hub.stop()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
