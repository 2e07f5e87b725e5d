"""`xstilts cache du` / `xstilts cache prune`: sizes by kind and search; prune keeps exactly what the named
searches' best, seeded and top trials use. Run: pytest tests/test_cache_tool.py"""

import json
from pathlib import Path
from types import SimpleNamespace

from search.cli import main
from search.trainable import _entries_file
from trainables.cache import Cache


def _entry(cache: Path, kind: str, n: int, size: int) -> str:
    path, _, _ = Cache(cache).entry(kind, {"n": n}).get_or_build(lambda tmp: (tmp / "w.bin").write_bytes(b"x" * size)
                                                                 and {})
    return path.name


def _search(storage: Path, name: str, cache: Path, trials: dict[int, tuple[float | None, list[str]]], seeded: int,
            best: int) -> Path:
    folder = storage / name
    folder.mkdir(parents=True)
    (folder / "search.json").write_text(json.dumps({"parent_run_id": "p", "tracking_uri": "sqlite:///x.db",
                                                    "experiment": "e", "config": {
                                                        "name": name, "storage": str(storage),
                                                        "points_to_evaluate": [{}] * seeded}}))
    (folder / "summary.json").write_text(json.dumps({"trials": [{"number": n, "average": avg} for n, (avg, _) in
                                                                trials.items()],
                                                     "best": {"number": best}}))
    ctx = SimpleNamespace(search_dir=str(folder), base=SimpleNamespace(cache_dir=str(cache)))
    for number, (_, used) in trials.items():
        _entries_file(ctx, {"optuna_trial": number}, used)  # what each trial writes
    return folder


def test_prune_keeps_best_seeded_and_top_trials_entries(tmp_path, capsys):
    cache, storage = tmp_path / "cache", tmp_path / "searches"
    toy = _entry(cache, "toy-model", 0, 10)
    p2 = [_entry(cache, "phase2", i, 1000 + i) for i in range(5)]
    p3 = [_entry(cache, "phase3", i, 10) for i in range(5)]
    features = _entry(cache, "features", 0, 50)
    # trial 0: the seeded baseline (toy model only); 1..4 each its own phase-2 encoder and phase-3 entry
    trials = {0: (60.0, [toy, p3[0]]), 1: (65.0, [toy, p2[1], p3[1]]), 2: (62.0, [toy, p2[2], p3[2]]),
              3: (61.0, [toy, p2[3], p3[3]]), 4: (None, [toy, p2[4], p3[4]])}  # 4 was pruned early (no average)
    folder = _search(storage, "s", cache, trials, seeded=1, best=1)
    (cache / "checkpoints" / p2[3]).mkdir(parents=True)  # a finished job's leftover checkpoint
    (cache / "checkpoints" / "phase2-running").mkdir(parents=True)  # a job still in progress: never touched
    (cache / f"{p2[0]}.tmp-otherhost-1-abcd").mkdir()  # a build in progress elsewhere
    main(["cache", "du", str(folder), "--json", str(tmp_path / "du.json")])
    du = json.loads((tmp_path / "du.json").read_text())
    assert du["cache"] == str(cache)  # the cache the trials recorded using
    assert du["kinds"]["phase2"]["entries"] == 5 and du["kinds"]["phase2"]["bytes"] >= sum(1000 + i for i in range(5))
    assert du["kinds"]["checkpoints"]["entries"] == 2 and set(du["kinds"]) >= {"toy-model", "phase3", "features"}
    assert du["searches"]["s"]["entries"] == 10  # toy + four phase-2 entries + five phase-3 entries
    main(["cache", "prune", str(folder), "--top", "2", "--dry-run", "--json", str(tmp_path / "dry.json")])
    dry = json.loads((tmp_path / "dry.json").read_text())
    assert dry["dry_run"] and all((cache / name).exists() for name in dry["removed"])
    main(["cache", "prune", str(folder), "--top", "2", "--json", str(tmp_path / "out.json")])
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["removed"] == dry["removed"]
    kept = {toy, p3[0], p2[1], p3[1], p2[2], p3[2]}  # seeded 0, best 1, top 2 by average (1, 2)
    gone = {p2[0], p2[3], p3[3], p2[4], p3[4], f"checkpoints/{p2[3]}"}  # p2[0]: used by no trial
    assert set(out["kept"]) == kept and set(out["removed"]) == gone, out
    assert all((cache / n).exists() for n in kept | {features, "checkpoints/phase2-running", f"{p2[0]}.tmp-otherhost-1-abcd"})
    assert not any((cache / n).exists() for n in gone)
    assert out["freed_bytes"] >= 1000 + 1003 + 1004
    assert "freed" in capsys.readouterr().out


def test_prune_refuses_a_search_that_has_not_finished(tmp_path, capsys):
    cache, storage = tmp_path / "cache", tmp_path / "searches"
    folder = _search(storage, "s", cache, {0: (60.0, [])}, seeded=1, best=0)
    (folder / "summary.json").unlink()
    try:
        main(["cache", "prune", str(folder)])
    except SystemExit as exc:
        assert exc.code == 2
    assert "has no summary.json" in capsys.readouterr().err
