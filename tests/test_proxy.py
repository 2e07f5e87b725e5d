"""A proxy search (issue: the scaling question for a fraction of its cost): the search runs on a small toy model,
then the baseline and its top-k mixtures run on the larger one, and the summary ranks them both ways.

Slow (two small searches). Run: pytest tests/test_proxy.py
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search.proxy import spearman

ROOT = Path(__file__).resolve().parents[1]
# a small and a tiny toy model (content-addressed: the session's cache builds each once)
SMALL = ["model.hidden_size=64", "model.layers=2", "model.heads=2", "model.mlm_steps=600"]
TINY = ["model.hidden_size=32", "model.layers=1", "model.heads=2"]


def test_spearman():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 2, 3], [5, 5, 5]) is None


def test_rankings_find_each_confirmed_mixture_also_when_a_crash_retried_it():
    """The confirmation's seeded points are found by mixture: a zombie (told FAIL) and its retry under a new
    number give the retry's score; the regret is the confirmation's best minus the proxy's pick there."""
    from types import SimpleNamespace

    from search.proxy import rankings

    cfg = SimpleNamespace(candidates=["mnli", "qqp"], proxy=SimpleNamespace(top_k=2))
    p = lambda **w: {**{f"use_{t}": t in w for t in cfg.candidates}, **{f"w_{t}": v for t, v in w.items()}}  # noqa: E731
    trial = lambda n, params, avg, state="COMPLETE", **kw: {"number": n, "params": params, "average": avg,  # noqa: E731
                                                            "state": state, "test_average": None, **kw}
    proxy = {"name": "px-proxy", "trials": [trial(0, p(), 50.0), trial(1, p(mnli=1.0), 60.0), trial(2, p(qqp=1.0), 55.0)]}
    here = {"trials": [trial(0, p(), 70.0, seeded=True), trial(1, p(mnli=1.0), None, "FAIL", seeded=True),
                       trial(2, p(qqp=1.0), 75.0, seeded=True), trial(3, p(mnli=1.0), 72.0, seeded=True, retry_of=1)]}
    out = rankings(cfg, proxy, here, [{"mnli": 1.0}, {"qqp": 1.0}])
    assert [r["average"] for r in out["configurations"]] == [70.0, 72.0, 75.0]
    assert out["regret"] == pytest.approx(3.0)  # the proxy picked mnli (72 here); qqp is best here (75)
    assert out["spearman"] == pytest.approx(0.5)


@pytest.mark.slow
def test_proxy_search_confirms_its_best_mixtures_on_the_larger_model(tmp_path, toy_dir, cache):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pipeline = [f"data_dir={toy_dir}", f"cache_dir={cache}", "intermediate.steps=60", "targets=[xnli,pawsx]",
                "target.max_eval_examples=60", "target.epochs={xnli: 2, pawsx: 2}", "target.max_train_examples=100",
                *SMALL]
    proxy = "proxy={overrides: [" + ", ".join(TINY) + "], top_k: 2}"
    args = [sys.executable, "-m", "search.cli", "search", str(ROOT / "configs/search/toy.yaml"), "name=px",
            f"storage={tmp_path / 'searches'}", "num_samples=4", "max_concurrent_trials=2", "finalists=null",
            "overrides=" + json.dumps(pipeline), f"tracking_uri={uri}", proxy, "--json", str(tmp_path / "s.json")]
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    root = tmp_path / "searches"
    first = json.loads((root / "px-proxy" / "summary.json").read_text())
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary == json.loads((root / "px" / "summary.json").read_text())
    assert len(first["trials"]) == 4
    # carried over: the proxy's two best distinct mixtures by validation, after the baseline
    done = sorted((t for t in first["trials"] if t["state"] == "COMPLETE"), key=lambda t: (-t["average"], t["number"]))
    weights = lambda t: {k[2:]: v for k, v in t["params"].items() if k.startswith("w_") and t["params"].get(f"use_{k[2:]}")}
    expected = []
    for t in done:
        if weights(t) and weights(t) not in expected:
            expected.append(weights(t))
    expected = expected[:2]
    rows = summary["proxy"]["configurations"]
    assert [r["mixture"] for r in rows] == [{}] + expected
    assert [t["number"] for t in summary["trials"]] == list(range(1 + len(expected)))
    assert all("intermediate_lr" not in t["params"] for t in summary["trials"])  # the preset's, not the proxy's
    by_number = {t["number"]: t["average"] for t in summary["trials"]}
    assert [r["average"] for r in rows] == [by_number[n] for n in range(len(rows))]
    assert rows[0]["proxy_average"] == next(t["average"] for t in first["trials"] if t["number"] == 0)
    assert summary["proxy"]["regret"] >= 0 and "Spearman" in out.stdout
    # the two stages ran on different toy models (each trial records the cache entries it used)
    def models(name):
        return {e for f in (root / name / "entries").glob("*.json") for e in json.loads(f.read_text())["entries"]
                if e.startswith("toy-model-")}
    assert len(models("px-proxy")) == len(models("px")) == 1 and models("px-proxy") != models("px")


def test_plan_prices_both_stages():
    """`xstilts plan` of a proxy search: the search on the proxy model, then top_k + 1 configurations on the
    search's model; cheaper than the same search on the large model directly."""
    from search.config import load_search_config
    from search.price import price

    scfg = load_search_config("mixture", ["proxy={model: xlm-roberta-base, top_k: 3}"])
    plan, direct = price(scfg, 8, "h100"), price(load_search_config("mixture"), 8, "h100")
    proxy, confirm = plan["stages"]["proxy"], plan["stages"]["confirmation"]
    assert proxy["assumptions"]["model"] == "xlm-roberta-base" and proxy["trials"] == scfg.num_samples
    assert confirm["assumptions"]["model"] == direct["assumptions"]["model"] and confirm["trials"] == 4
    assert plan["gpu_hours"] == pytest.approx(proxy["gpu_hours"] + confirm["gpu_hours"], abs=2e-3)
    assert confirm["gpu_hours"] < plan["gpu_hours"] < direct["gpu_hours"]
