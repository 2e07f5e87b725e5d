"""A search on a two-node cluster whose trial node is not the driver's machine in spirit: a clean environment, its
own working directory, and (in one test) another file system at the storage path (tests/cluster.py).

- the driver's HF_*, XSTILTS_* and the search's `env: [...]` reach the clean node, MLFLOW_TRACKING_* do not (Ray's
  runtime_env); without forwarding they do not (what the code did before);
- a node that sees another file system at the search's storage path is refused before anything runs, with one
  line naming the node and the path.
Slow: each test starts two Ray nodes. Run: pytest tests/test_cluster.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import TwoNodes, can_unshare

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

DRIVER = r"""
import json, os, sys
import ray
from search.cluster import check_nodes, forwarded_env
from search.tuner import init_ray

forward = sys.argv[2] == "forward"
env = forwarded_env(["MY_SETTING"]) if forward else None
init_ray(sys.argv[1], env)

@ray.remote(num_cpus=1)
def on_a_trial_node():
    import os, socket
    names = ("HF_TOKEN", "HF_HUB_OFFLINE", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "XSTILTS_FLAG",
             "MY_SETTING", "NOT_FORWARDED")
    return {"env": {k: os.environ.get(k) for k in names}, "cwd": os.getcwd(), "home": os.environ.get("HOME")}

out = ray.get(on_a_trial_node.remote())
if forward:
    out["nodes_checked"] = check_nodes({"storage": sys.argv[3]}, sorted(env))
print("RESULT " + json.dumps(out))
"""

SECRETS = {"HF_TOKEN": "hf_rehearsal", "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_USERNAME": "alice",
           "MLFLOW_TRACKING_PASSWORD": "s3cret", "XSTILTS_FLAG": "on", "MY_SETTING": "42", "NOT_FORWARDED": "x"}


def _driver(cluster, mode: str, storage: Path, cwd: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", DRIVER, cluster.address, mode, str(storage)], capture_output=True,
                         text=True, cwd=cwd, env=cluster.client_env({**os.environ, **SECRETS}), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_the_clean_node_sees_the_forwarded_variables(tmp_path):
    storage = tmp_path / "storage"
    with TwoNodes(tmp_path) as cluster:
        before = _driver(cluster, "plain", storage, tmp_path)  # ray.init as the code did before
        after = _driver(cluster, "forward", storage, tmp_path)
    # the trial ran on the clean node: its own working directory and HOME, none of the driver's variables
    assert before["cwd"] == str(cluster.clean_wd) and before["home"] == str(cluster.clean_home)
    assert all(v is None for v in before["env"].values()), before
    expected = {k: v for k, v in SECRETS.items() if k != "NOT_FORWARDED" and not k.startswith("MLFLOW_")}  # (only
    # the driver talks to MLflow: the tracking server's credentials never reach a trial)
    assert {k: v for k, v in after["env"].items() if v is not None} == expected
    assert after["nodes_checked"] == 2


@pytest.mark.skipif(not can_unshare(), reason="needs root and unshare --mount (a node with its own file system)")
def test_a_node_that_sees_another_storage_is_refused(toy_dir, tmp_path):
    storage = tmp_path / "shared" / "searches"
    storage.mkdir(parents=True)
    with TwoNodes(tmp_path, private=[tmp_path / "shared"]) as cluster:
        out = subprocess.run(
            [sys.executable, "-m", "search.cli", "search", "name=refused", f"storage={storage}", "num_samples=1",
             f"data_dir={toy_dir}", "overrides=[\"targets=[xnli]\"]", "--address", cluster.address],
            capture_output=True, text=True, cwd=tmp_path, timeout=300, env=cluster.client_env())
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    error = [l for l in out.stderr.splitlines() if l.startswith("error:")]
    assert len(error) == 1 and "node 127.0.0.1" in error[0] or "node " in error[0], out.stderr[-2000:]
    assert f"storage {storage}" in error[0] and "mounts at the same path" in error[0], error
    assert not (storage / "refused").exists() and not list(storage.glob(".xstilts-nodecheck*"))
