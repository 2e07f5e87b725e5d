"""The real search driver with replayed trials (benchmarks/driver_scale.py, search/replay.py), at a small size:
40 trials, 8 at a time, rungs 1/100 of their recorded time. The benchmark runs as its own process (it starts and
stops its own Ray); the test then reads what the search left behind — the Optuna study, the MLflow runs, the
summary — and checks it against the record.

Run: pytest -m slow tests/test_driver_scale.py      (about a minute on 2 cores)
"""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "records" / "toy_grid.json"
pytestmark = pytest.mark.slow


def _label(config: dict) -> str:
    tasks = sorted(config["mixture"])
    return "baseline" if not tasks else f"{'+'.join(tasks)} @ {config['intermediate_lr']:g}"


def test_replayed_search_at_small_scale(tmp_path):
    import optuna
    from mlflow import MlflowClient

    out, keep = tmp_path / "out.json", tmp_path / "kept"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "driver_scale.py"), "--trials", "40",
                           "--concurrent", "8", "--time-scale", "0.01", "--json", str(out), "--keep", str(keep)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    shape = {"trials": int, "concurrent": int, "wall_s": float, "ideal_s": float, "overhead_ratio": float,
             "per_trial_driver_ms": float, "peak_rss_gb": float}
    for key, kind in shape.items():
        assert isinstance(result[key], kind), (key, result[key])
    assert result["trials"] == 40 and result["concurrent"] == 8
    assert 0 < result["ideal_s"] < result["wall_s"] and result["peak_rss_gb"] > 0
    assert result["overhead_ratio"] == pytest.approx(result["wall_s"] / result["ideal_s"], rel=1e-2)

    # Optuna: every trial finished (COMPLETE or PRUNED), none left RUNNING; ASHA stopped some
    search = keep / "runs" / "searches" / "scale-40"
    study = optuna.load_study(study_name="scale-40", storage=f"sqlite:///{search / 'optuna.db'}")
    states = Counter(t.state.name for t in study.trials)
    assert len(study.trials) == 40 and set(states) == {"COMPLETE", "PRUNED"}, states
    assert states["PRUNED"] >= 5, states

    # MLflow: one closed run per trial, each naming the recorded configuration it replayed
    record = {_label(c): c for c in json.loads(RECORD.read_text())["configs"]}
    client = MlflowClient(f"sqlite:///{keep / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("xstilts-search-scale-40")
    runs = {int(r.data.tags["optuna.trial"]): r for r in client.search_runs([exp.experiment_id])
            if "optuna.trial" in r.data.tags}
    assert sorted(runs) == list(range(40)) and {r.info.status for r in runs.values()} == {"FINISHED"}
    for t in study.trials:  # what Optuna was told is what the record says for the rungs the trial ran
        config = record[runs[t.number].data.tags["replay.config"]]
        ran = max(t.intermediate_values)
        assert t.intermediate_values == {r: config["values"][r - 1] for r in range(1, ran + 1)}
        assert (t.state.name == "COMPLETE") == (ran == len(config["values"]))

    # the summary's best: the record's best configuration among those the search ran to the last rung
    summary = json.loads((search / "summary.json").read_text())
    assert len(summary["trials"]) == 40
    finished = {t.number: record[runs[t.number].data.tags["replay.config"]] for t in study.trials
                if t.state.name == "COMPLETE"}
    best_final = max(c["final"] for c in finished.values())
    assert summary["best"]["average"] == best_final
    assert finished[summary["best"]["number"]]["final"] == best_final
    assert set(summary["best"]["mixture"]) == set(finished[summary["best"]["number"]]["mixture"])
    assert summary["best"]["test_average"] == pytest.approx(finished[summary["best"]["number"]]["test_average"])
