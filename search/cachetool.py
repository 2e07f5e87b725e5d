"""`xstilts cache du` and `xstilts cache prune`: what the cache holds, and removing what no kept trial uses.

A cache (trainables/cache.py) holds entries `<kind>-<key>` — toy-model, phase2 (2.2 GB each for XLM-R Large),
phase3, features — plus the checkpoints of jobs in progress (`checkpoints/`, `ray-train/`). Each search trial
records the entries it uses in `<search>/entries/<trial>.json`, so sizes can be told per search and a prune can
keep exactly what matters:

  du(cache)                         bytes per kind, and per search under the storage (entries it uses)
  prune(cache, searches, top)       keep the entries that each named search's kept trials use — its best trial,
                                    its seeded points (baseline, known mixtures) and its `top` trials by the
                                    validation objective; remove every other phase2 and phase3 entry, and the
                                    checkpoints of jobs whose entry is published. Toy models and tokenised
                                    features stay (cheap, shared by everything); builds in progress
                                    (`*.tmp-*`), locks and live checkpoints are never touched.

Run prune when the searches that share the cache have finished: an entry a running trial is about to read is
rebuilt (not lost), at its cost.

  xstilts cache du [SEARCH...] [--json F]
  xstilts cache prune SEARCH... [--top 3] [--dry-run]
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

from trainables.cache import MANIFEST
from trainables.checkpoints import CHECKPOINTS, TRAIN_RUNS
from trainables.errors import XstiltsError

PRUNED_KINDS = ("phase2", "phase3")


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def entries(cache: Path) -> dict[str, Path]:
    """Published entries of a cache: `<kind>-<key>` -> folder."""
    return {p.name: p for p in Path(cache).glob("*-*") if p.is_dir() and ".tmp-" not in p.name
            and ".broken-" not in p.name and (p / MANIFEST).exists()}


def kind_of(name: str) -> str:
    return name.rsplit("-", 1)[0]


def trial_entries(search_folder: Path) -> dict[int, list[str]]:
    """{optuna trial number: cache entries it uses} as the trials recorded them."""
    out = {}
    for f in sorted((Path(search_folder) / "entries").glob("*.json")):
        try:
            data = json.loads(f.read_text())
            out[int(data["trial"])] = list(data["entries"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def recorded_cache(search_folder: Path) -> str | None:
    """The cache folder a search's trials used (as they recorded it), else None."""
    for f in sorted((Path(search_folder) / "entries").glob("*.json")):
        try:
            return json.loads(f.read_text())["cache_dir"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def kept_trials(search_folder: Path, top: int) -> set[int]:
    """The trials a prune keeps: the best, the seeded points, and the `top` by validation objective."""
    summary_path = Path(search_folder) / "summary.json"
    if not summary_path.exists():
        raise XstiltsError(f"search {Path(search_folder).name!r} has no summary.json (still running, or it crashed)",
                           "let it finish (or `xstilts search ... --resume`), then prune")
    summary = json.loads(summary_path.read_text())
    state = json.loads((Path(search_folder) / "search.json").read_text())
    n_points = len(state.get("config", {}).get("points_to_evaluate", []))
    seeded = {t["number"] for t in summary["trials"] if t["seeded"]} if all("seeded" in t for t in summary["trials"]) \
        else set(range(n_points))  # (summaries written before trials said whether they were seeded)
    scored = sorted((t for t in summary["trials"] if t.get("average") is not None), key=lambda t: -t["average"])
    keep = {t["number"] for t in scored[:top]} | seeded
    if summary.get("best"):
        keep.add(summary["best"]["number"])
    return keep


def du(cache: Path, searches: dict[str, Path] | None = None) -> dict:
    """{"cache", "total_bytes", "kinds": {kind: {"entries", "bytes"}}, "searches": {name: {"entries", "bytes"}}}."""
    cache = Path(cache)
    sizes = {name: size_of(p) for name, p in entries(cache).items()}
    kinds: dict[str, dict] = defaultdict(lambda: {"entries": 0, "bytes": 0})
    for name, size in sizes.items():
        kinds[kind_of(name)]["entries"] += 1
        kinds[kind_of(name)]["bytes"] += size
    for extra in (CHECKPOINTS, TRAIN_RUNS):
        folders = [p for p in (cache / extra).glob("*")] if (cache / extra).exists() else []
        if folders:
            kinds[extra] = {"entries": len(folders), "bytes": sum(size_of(p) for p in folders)}
    per_search = {}
    for name, folder in (searches or {}).items():
        used = {e for es in trial_entries(folder).values() for e in es if e in sizes}
        per_search[name] = {"entries": len(used), "bytes": sum(sizes[e] for e in used)}
    return {"cache": str(cache), "total_bytes": sum(k["bytes"] for k in kinds.values()),
            "kinds": dict(sorted(kinds.items())), "searches": per_search}


def prune(cache: Path, searches: dict[str, Path], top: int = 3, dry_run: bool = False) -> dict:
    """Remove what no named search's kept trials use (module docstring). Returns {"kept", "removed", "freed_bytes",
    "dry_run"} with entry names."""
    if not searches:
        raise XstiltsError("name the searches whose best trials to keep, e.g. `xstilts cache prune toy`")
    cache = Path(cache)
    keep: set[str] = set()
    for folder in searches.values():
        used = trial_entries(folder)
        for number in kept_trials(folder, top):
            keep |= set(used.get(number, []))
    published = entries(cache)
    doomed = [p for name, p in published.items() if kind_of(name) in PRUNED_KINDS and name not in keep]
    for extra in (CHECKPOINTS, TRAIN_RUNS):  # checkpoints of jobs that finished (their entry exists)
        doomed += [p for p in (cache / extra).glob("*") if p.name in published] if (cache / extra).exists() else []
    freed = sum(size_of(p) for p in doomed)
    if not dry_run:
        for p in doomed:
            shutil.rmtree(p, ignore_errors=True)
    return {"kept": sorted(k for k in keep if k in published), "removed": sorted(str(p.relative_to(cache)) for p in doomed),
            "freed_bytes": freed, "dry_run": dry_run}


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
