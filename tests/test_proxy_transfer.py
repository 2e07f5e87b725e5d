"""The proxy-transfer benchmark (benchmarks/proxy_transfer.py) on planted grids (fast): where the small model
ranks configurations as the large one does, the proxy procedure finds the large grid's best for a fraction of
the direct search's cost; where it ranks them the other way round, the benchmark says so (negative Spearman,
large regret) rather than reporting a pick as good. The checked-in records hold the same configurations.

Run: pytest tests/test_proxy_transfer.py
"""

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from test_search_efficiency import planted

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location("proxy_transfer", ROOT / "benchmarks" / "proxy_transfer.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _small(large: dict, scale: float, sign: float) -> dict:
    """The large grid as a model `scale` times cheaper would record it, its ranking kept (sign 1) or reversed."""
    out = copy.deepcopy(large)
    for c in out["configs"]:
        c["elapsed_s"] = [t * scale for t in c["elapsed_s"]]
        c["values"] = [sign * v for v in c["values"]]
        c["final"] = sign * c["final"]
    return out


@pytest.mark.slow  # seconds: the fast layer stays under a minute
def test_a_faithful_proxy_finds_the_best_for_less():
    large = planted()
    out = bench.run(_small(large, 0.1, 1.0), large, seeds=10, trials=12, top_k=3, lr=1e-3)
    assert out["spearman"] == pytest.approx(1.0)
    assert out["regret"] <= 0.5 and out["within_0.5"] >= 8, out  # the goal: within half a point
    assert out["cost_ratio"] < 1.0, out  # 12 cheap trials + 4 confirmations beat searching the large grid
    assert out["best"]["large"][:2] == [{"mnli": 1.0, "qqp": 1.0}, 1e-3]


@pytest.mark.slow  # seconds: the fast layer stays under a minute
def test_a_misleading_proxy_is_reported_as_such():
    large = planted()
    out = bench.run(_small(large, 0.1, -1.0), large, seeds=10, trials=12, top_k=3, lr=1e-3)
    assert out["spearman"] == pytest.approx(-1.0)
    assert out["regret"] > 3.0, out  # the small model's favourites are the large model's worst


def test_the_records_hold_the_same_configurations():
    records = {size: path for size, path in bench.RECORDS.items() if path.exists()}
    if len(records) < 2:
        pytest.skip("benchmarks/records/proxy_*.json not recorded yet (python benchmarks/proxy_transfer.py --record)")
    tables = {size: bench.SE.Table(json.loads(path.read_text())) for size, path in records.items()}
    assert set(bench.finals(tables["small"])) == set(bench.finals(tables["large"]))
    assert all(len(c["values"]) == tables["large"].n_rungs for t in tables.values() for c in t.configs)
    assert json.loads(records["small"].read_text())["settings"]["model"]["hidden_size"] == 64
