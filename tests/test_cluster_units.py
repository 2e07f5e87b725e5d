"""What a search forwards to every node, and where its files live by default. Run: pytest tests/test_cluster_units.py"""

import json
from pathlib import Path

import pytest

from search.cluster import forwarded_env, forwarded_names
from search.config import load_search_config
from trainables.errors import XstiltsError

ROOT = Path(__file__).resolve().parents[1]


def test_fixed_prefixes_and_named_extras_are_forwarded_nothing_else():
    environ = {"HF_TOKEN": "t", "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_PASSWORD": "p", "MLFLOW_TRACKING_URI": "u",
               "XSTILTS_CACHE": "/c", "XSTILTS_HOME": "/home/me", "WANDB_API_KEY": "w", "PATH": "/bin", "MY": "1"}
    assert forwarded_env(["WANDB_API_KEY"], environ) == {  # (MLflow's credentials stay with the driver, the only
        "HF_TOKEN": "t", "HF_HUB_OFFLINE": "1", "XSTILTS_CACHE": "/c", "WANDB_API_KEY": "w"}  # one that writes runs)
    assert "XSTILTS_HOME" not in forwarded_names([], environ)  # trials get absolute paths instead


def test_a_submitted_jobs_own_variables_are_left_to_the_job(monkeypatch):
    """Ray refuses a driver runtime_env that sets a variable the job's runtime_env already sets."""
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": {"HF_TOKEN": "job"}}}))
    assert forwarded_env([], {"HF_TOKEN": "driver", "HF_HOME": "/h"}) == {"HF_HOME": "/h"}


def test_env_names_are_validated():
    with pytest.raises(XstiltsError, match="not an environment variable name"):
        load_search_config(None, ["env=[WANDB_API_KEY, 'BAD NAME']"])


def test_a_searchs_relative_paths_live_under_its_storage(tmp_path, monkeypatch):
    """By default a search's cache and data (relative in the preset) live under its storage — on a cluster the
    shared storage every node mounts — not under the working directory of one node."""
    from search.tuner import base_config, trial_context

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XSTILTS_CACHE", raising=False)
    monkeypatch.delenv("XSTILTS_HOME", raising=False)
    cfg = load_search_config(None, [f"storage={tmp_path / 'shared'}"])
    base = base_config(cfg)
    assert base.cache_dir == str(tmp_path / "shared" / ".xstilts" / "cache")
    assert base.data_dir == str(tmp_path / "shared" / "toy_data")
    assert trial_context(cfg, base, None).train_storage.startswith(str(tmp_path / "shared"))
    explicit = base_config(load_search_config(None, [f"storage={tmp_path / 'shared'}", "cache_dir=/elsewhere/c",
                                                     "data_dir=mydata"]))
    assert explicit.cache_dir == "/elsewhere/c" and explicit.data_dir == str(tmp_path / "mydata")
    monkeypatch.setenv("XSTILTS_CACHE", str(tmp_path / "team-cache"))
    assert base_config(cfg).cache_dir == str(tmp_path / "team-cache")


def test_the_driver_prepares_what_trials_would_fetch_and_refuses_offline(toy_dir, tmp_path, monkeypatch):
    """Trials never read the Hub: the search names the tasks whose sources are not under data_dir, and with the
    Hub switched off the driver says how to prepare them instead of letting trials fail one by one."""
    from search.cluster import missing_sources, search_data, search_tasks
    from search.tuner import base_config

    cfg = load_search_config(None, [f"storage={tmp_path / 's'}", f"data_dir={toy_dir}"])
    base = base_config(cfg)
    assert set(search_tasks(cfg, base)) >= {"mnli", "qqp", "squad_v1", "sst2", "xnli"}
    assert missing_sources(search_tasks(cfg, base), toy_dir) == []
    assert search_data(cfg, base)[1] == []  # nothing missing: no Hub call
    empty = load_search_config(None, [f"storage={tmp_path / 's'}", f"data_dir={tmp_path / 'empty'}",
                                      "overrides=[\"targets=[xnli]\"]"])
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(XstiltsError, match="xstilts data prepare .*mnli.* --data-dir"):
        search_data(empty, base_config(empty))
