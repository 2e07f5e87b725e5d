"""A team deployment, for real: PostgreSQL 15 behind an MLflow tracking server with MLflow's basic-auth app and
artifacts on shared disk, the Optuna study on PostgreSQL, optuna-dashboard on the study, credentials from the
environment, and no secret written anywhere xstilts writes. Slow. Run: pytest tests/test_team.py
"""

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import Postgres, free_port, wait_http

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
PG_PASSWORD, MLFLOW_PASSWORD, HF_TOKEN = "pg-Secr3t-x9", "mlflow-Secr3t-y7", "hf_Secr3tTokenZ5"


@pytest.fixture(scope="module")
def postgres():
    try:
        pg = Postgres(PG_PASSWORD)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    yield pg
    pg.stop()


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_search_on_a_team_server(postgres, tmp_path, toy_dir, cache):
    postgres.create("mlflow")
    postgres.create("optuna")
    port = free_port()
    (tmp_path / "auth.ini").write_text(f"""[mlflow]
default_permission = READ
database_uri = sqlite:///{tmp_path / 'basic_auth.db'}
admin_username = admin
admin_password = {MLFLOW_PASSWORD}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
""")
    server_env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"), "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
                  "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                               "--backend-store-uri", postgres.url("mlflow"), "--artifacts-destination",
                               str(tmp_path / "shared-artifacts"), "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], env=server_env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    dash = None
    try:
        assert wait_http(f"{uri}/health", any_status=True)
        with pytest.raises(urllib.error.HTTPError) as refused:  # no credentials: refused
            urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search?max_results=5", timeout=5)
        assert refused.value.code == 401
        preset = tmp_path / "team.yaml"  # the storage URI carries a password: it must not end up anywhere
        preset.write_text(json.dumps({
            "name": "team", "pipeline": "toy", "storage": str(tmp_path / "searches"), "num_samples": 2,
            "max_concurrent_trials": 2, "candidates": ["mnli"], "points_to_evaluate": [{}, {"mnli": 1.0}],
            "tracking_uri": uri, "optuna_storage": postgres.url("optuna"),
            "overrides": [f"data_dir={toy_dir}", f"cache_dir={cache}", "intermediate.steps=20", "targets=[xnli,tatoeba]",
                          "target.epochs={xnli: 1}", "target.max_train_examples=50", "target.max_eval_examples=40"]}))
        env = {**os.environ, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD,
               "HF_TOKEN": HF_TOKEN}
        out = subprocess.run([sys.executable, "-m", "search.cli", "search", str(preset)], capture_output=True,
                             text=True, cwd=tmp_path, env=env, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        report = subprocess.run([sys.executable, "-m", "search.cli", "report", str(preset)], capture_output=True,
                                text=True, cwd=tmp_path, env=env, timeout=300)
        assert report.returncode == 0, report.stderr[-3000:]

        import optuna
        from mlflow import MlflowClient

        study = optuna.load_study(study_name="team", storage=postgres.url("optuna"))  # the study lives in PostgreSQL
        assert len(study.trials) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", MLFLOW_PASSWORD
        try:
            client = MlflowClient(uri)
            exp = client.get_experiment_by_name("xstilts-search-team")
            runs = client.search_runs([exp.experiment_id])
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}  # the parent + 2 trials
        assert list((tmp_path / "shared-artifacts").rglob("summary.json"))  # artifacts on the shared disk

        secrets = (PG_PASSWORD, MLFLOW_PASSWORD, HF_TOKEN)
        logged = json.dumps([[r.data.params, r.data.tags] for r in runs])
        written = [p for p in (tmp_path / "searches/team").rglob("*") if p.is_file() and "ray" not in p.parts]
        written += list((tmp_path / "shared-artifacts").rglob("*.*"))
        for secret in secrets:
            assert secret not in out.stdout + out.stderr + report.stdout + report.stderr, secret
            assert secret not in logged, secret
            for path in written:
                assert secret.encode() not in path.read_bytes(), (secret, path)
        summary = json.loads((tmp_path / "searches/team/summary.json").read_text())
        assert "postgres:***@127.0.0.1" in summary["optuna_storage"]

        dash_port = free_port()  # optuna-dashboard on the PostgreSQL study
        dash = subprocess.Popen([sys.executable, "-m", "search.cli", "dashboard", str(preset), "--port", str(dash_port)],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert wait_http(f"http://127.0.0.1:{dash_port}/api/studies", 60)
        studies = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{dash_port}/api/studies").read())
        assert [s["study_name"] for s in studies["study_summaries"]] == ["team"]
    finally:
        if dash is not None:
            _stop(dash)
        _stop(server)


def test_dashboard_serves_a_sqlite_study(tmp_path):
    import optuna

    folder = tmp_path / "searches" / "local"
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name="local", storage=f"sqlite:///{folder / 'optuna.db'}", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    from search.config import load_search_config

    cfg = load_search_config("toy", ["name=local", f"storage={tmp_path / 'searches'}"])
    (folder / "search.json").write_text(json.dumps({"parent_run_id": "p", "tracking_uri": "sqlite:///x.db",
                                                    "experiment": "e", "config": cfg.model_dump()}))
    port = free_port()
    dash = subprocess.Popen([sys.executable, "-m", "search.cli", "dashboard", str(folder), "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_http(f"http://127.0.0.1:{port}/api/studies", 60)
        studies = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies").read())["study_summaries"]
        assert [s["study_name"] for s in studies] == ["local"] and studies[0]["directions"] == ["maximize"]
    finally:
        _stop(dash)
