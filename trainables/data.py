"""The data layer: read every task from a local data_dir or the Hub, and normalise it per kind.

A source is read from `<data_dir>/<hub_id>/<config>/<split>.{parquet,jsonl,csv}` when that file exists
(columns exactly as on the Hub), else from the Hub with `datasets` 5.x. Both paths yield the same rows,
so one set of readers (`trainables.readers`) normalises them into examples of the task's kind:

  classification / pair_classification  {"text_a", "text_b"?, "label": int}
  multiple_choice                       {"context", "choices": [str], "label": int}
  span_qa                               {"id", "context", "question", "answers": {"text", "answer_start"}}
  tagging                               {"tokens": [str], "tags": [str]}       (tag *names*, not ids)
  retrieval                             {"sources": [str], "targets": [str], "gold": [[i, j]]}  (one per language)
Raw corpora that are not on the Hub (BUCC 2018's sample corpora, its dev set, and its training corpora, XTREME's
test set) are read from their official release layout under data_dir (`bucc2018/<xx>-en/<xx>-en.{sample,training}
.{xx,en,gold}`). Where they are absent, stand-ins are read (fallback sources): google/xtreme's gold pairs for dev
(`gold_only_languages` says where; a search refuses them in its objective), mteb/BUCC's copy of the training
corpora for test. A mining test corpus without distractors on either side is refused (`without_distractors`).

`prepare` (`xstilts data prepare`) fills a data_dir from the Hub once, pinned: each Hub source's commit SHA is
resolved once and every split is read at it, and `<data_dir>/xstilts-sources.json` records the SHAs (read them
with `source_shas`); a 429/503 from the Hub is waited out (Retry-After) a bounded number of times. A prepared
data_dir is then read with the Hub switched off (`HF_HUB_OFFLINE=1`). `<data_dir>/xstilts.json` is a different
manifest: the languages a partial data_dir holds.

Inspect:  xstilts data inspect xnli --data-dir toy_data --json
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from trainables.errors import XstiltsError
from trainables.progress import bar as progress_bar
from trainables.readers import READERS, raw_bucc_files, read_bucc_raw, without_distractors
from trainables.tasks import TYDIQA_PREFIXES, Source, Task, get_task, training_task

SPLITS = ("train", "validation", "test")
SUFFIXES = (".parquet", ".jsonl", ".csv")
MANIFEST = "xstilts.json"  # a data_dir that holds only some languages lists them here
SOURCES_MANIFEST = "xstilts-sources.json"  # what `prepare` downloaded, at which Hub commit SHA
HUB_TRIES = 5  # attempts per Hub call in `prepare` when the Hub answers 429/503
HUB_RETRY_STATUSES = (429, 503)
HUB_MAX_WAIT_S = 300.0  # a Retry-After longer than this is capped


# ---------------------------------------------------------------- reading one source split


def local_path(data_dir: Path | None, hub_id: str, config: str, split: str) -> Path | None:
    if data_dir is None:
        return None
    for suffix in SUFFIXES:
        path = Path(data_dir) / hub_id / config / f"{split}{suffix}"
        if path.exists():
            return path
    return None


def read_local(path: Path) -> list[dict]:
    """Rows of one local file, as dicts with the Hub's columns."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as fh:
                return [json.loads(line) for line in fh if line.strip()]
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    except Exception as exc:  # pyarrow/json errors are long; keep the user's line short
        raise XstiltsError(f"cannot read {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}) — "
                           f"delete it and re-run `xstilts data prepare`") from exc


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def hub_load(source: Source, config: str, split: str, revision: str | None = None) -> Iterable[dict]:
    """Load one split from the Hub with datasets 5.x (no loading scripts), at `revision` (a commit SHA from
    `hub_sha`) or else at the source's own revision."""
    from datasets import load_dataset

    if source.files:  # raw files (Cosmos QA): the csv/json builders, no script
        url = source.files[split]
        builder = "csv" if url.endswith(".csv") else "json"
        return load_dataset(builder, data_files={split: url}, split=split)
    revision = revision or source.revision
    if source.revision == "refs/convert/parquet":  # the viewer's export: <config>/<split>/*.parquet
        return load_dataset(source.hub_id, data_dir=config, revision=revision, split=split)
    return load_dataset(source.hub_id, config, split=split, revision=revision)


def hub_sha(source: Source) -> str:
    """The commit SHA the Hub's branch (or tag, or SHA) `source.revision` (default `main`) points at now."""
    from huggingface_hub import HfApi

    return HfApi().dataset_info(source.hub_id, revision=source.revision or "main").sha


_SHAS: dict[tuple[str, str | None], str | None] = {}


def _sha_now(source: Source) -> str | None:
    """`hub_sha(source)` once per process; None when the Hub cannot be asked."""
    key = (source.hub_id, source.revision)
    if key not in _SHAS:
        try:
            _SHAS[key] = hub_retry(f"{source.hub_id}@{source.revision or 'main'}", lambda: hub_sha(source),
                                   log=lambda *a: None)
        except Exception:  # unreachable: the load itself will say so; the key keeps the revision as given
            _SHAS[key] = None
    return _SHAS[key]


def key_revision(source: Source) -> str | None:
    """What a cache key records of a Hub source read directly (no data_dir): the commit SHA its revision points at
    now (once per process), so a dataset changed upstream gives new keys instead of stale entries; offline, the
    revision as given (nothing can be loaded then anyway)."""
    if source.files or offline():
        return source.revision
    return _sha_now(source) or source.revision


def read_split(task: Task, source: Source, config: str, split: str, data_dir: Path | None,
               loader: Callable[[Source, str, str], Iterable[dict]] = hub_load) -> list[dict]:
    """Rows of one Hub split of one source: local file first, else the Hub; columns checked."""
    path = local_path(data_dir, source.hub_id, config, split)
    if path is not None:
        rows = read_local(path)
        where = str(path)
    elif source.local_only:
        raise XstiltsError(f"{task.name}: no local files under {data_dir} — {source.local_only}")
    elif offline() or loader is None:
        raise XstiltsError(
            f"{task.name}: missing source offline: {source.hub_id}/{config}/{split} is not under "
            f"{data_dir or '(no --data-dir)'} — run `xstilts data prepare {task.name} --data-dir DIR` "
            f"where the Hub is reachable, or unset HF_DATASETS_OFFLINE/HF_HUB_OFFLINE")
    else:
        try:
            rows = [dict(r) for r in loader(source, config, split)]  # dict(): datasets 5 yields LazyRow
        except XstiltsError:
            raise
        except Exception as exc:
            raise XstiltsError(f"{task.name}: cannot load {source.hub_id}/{config} split {split} from the Hub "
                               f"({type(exc).__name__}) — prepare it offline with `xstilts data prepare`") from exc
        where = f"{source.hub_id}/{config}:{split}"
    if rows:
        missing = [c for c in source.columns if c not in rows[0]]
        if missing:
            raise XstiltsError(f"{task.name}: wrong columns in {where}: missing {missing} — "
                               f"expected the Hub schema {list(source.columns)}")
    return rows


# ---------------------------------------------------------------- tasks, splits, languages


def manifest_languages(data_dir: Path | None) -> set[str] | None:
    """Languages a partial data_dir holds (its manifest), or None when it holds every language."""
    if data_dir is None or not (Path(data_dir) / MANIFEST).exists():
        return None
    try:
        return set(json.loads((Path(data_dir) / MANIFEST).read_text())["languages"])
    except (ValueError, KeyError) as exc:
        raise XstiltsError(f"malformed {Path(data_dir) / MANIFEST}: expected {{\"languages\": [...]}}") from exc


def task_languages(task: Task, data_dir: Path | None, split: str = "test") -> list[str]:
    """The task's XTREME languages for a split (UD-POS validates on 29 of its 33) that this data_dir holds
    (all of them without a manifest)."""
    held = manifest_languages(data_dir)
    return [lang for lang in task.languages_for(split) if held is None or lang in held]


@dataclass(frozen=True)
class Read:
    """One source split a task's split reads, and the languages it yields."""

    source: Source
    config: str
    hub_split: str
    langs: tuple[str, ...]

    def fallback_covered(self, have) -> bool:
        return self.source.fallback and all(lang in have for lang in self.langs)


def plan(task: Task, split: str, langs: Sequence[str]) -> list[Read]:
    """Every source split behind one of xstilts' splits, in the task table's order."""
    out = []
    for source in task.sources:
        for hub_split in source.splits.get(split, ()):
            if source.per_language:
                out += [Read(source, source.config_for(l), hub_split, (l,)) for l in langs]
            elif source.lang_from_id:
                out.append(Read(source, source.config, hub_split, tuple(langs)))
            elif "en" in langs:
                out.append(Read(source, source.config, hub_split, ("en",)))
    return out


def _present(read: Read, data_dir: Path | None) -> bool:
    """Whether a source split can be read: its raw or local files are under data_dir, or it is on the Hub."""
    if read.source.raw:
        folder = Path(data_dir or ".") / read.source.hub_id / read.config
        return data_dir is not None and raw_bucc_files(folder, read.config, read.hub_split)[2].exists()
    if read.source.local_only:
        return local_path(data_dir, read.source.hub_id, read.config, read.hub_split) is not None
    return True


def used_reads(task: Task, split: str, langs: Sequence[str], data_dir: Path | None) -> list[Read]:
    """The reads `load_split` makes: a fallback source only for the languages no earlier source holds (BUCC's
    stand-ins when its official corpora are absent)."""
    out, have = [], set()
    for read in plan(task, split, langs):
        if read.source.fallback and all(lang in have for lang in read.langs):
            continue
        out.append(read)
        if _present(read, data_dir):
            have.update(read.langs)
    return out


def gold_only_languages(task: Task | str, split: str, data_dir: Path | str | None) -> list[str]:
    """The languages of a split that would come from a gold-only stand-in (google/xtreme bucc18.*, when BUCC's
    sample corpora are not under data_dir): no distractors, so a threshold or score there means little."""
    data_dir = Path(data_dir) if data_dir is not None else None
    task, langs = _split_task(task, split, data_dir)
    return [lang for read in used_reads(task, split, langs, data_dir) if read.source.gold_only for lang in read.langs]


def _split_task(task: Task | str, split: str, data_dir, languages=None) -> tuple[Task, list[str]]:
    task = get_task(task) if isinstance(task, str) else task
    if split not in SPLITS:
        raise XstiltsError(f"unknown split {split!r} — splits are {SPLITS}")
    if split == "train":
        return training_task(task), ["en"]
    return task, list(languages) if languages is not None else task_languages(task, data_dir, split)


def load_split(task: Task | str, split: str, data_dir: Path | str | None = None,
               languages: Sequence[str] | None = None, loader=hub_load) -> dict[str, list[dict]]:
    """Normalised examples of one split, by language: `{lang: [example, ...]}`.

    `train` is always the English training set (a target's comes from `train_on`: XNLI reads MNLI);
    evaluation splits cover the task's languages for that split that the data_dir holds. A fallback source
    (BUCC's gold-only dev) is read only for languages no earlier source held. Missing splits give `{}`.
    """
    data_dir = Path(data_dir) if data_dir is not None else None
    asked = get_task(task) if isinstance(task, str) else task
    task, langs = _split_task(asked, split, data_dir, languages)
    out: dict[str, list[dict]] = {}
    reads = plan(task, split, langs)
    for n, read in enumerate(reads):
        if read.fallback_covered(out):
            continue
        has_fallback = any(r.source.fallback for r in reads[n + 1:])
        rows = read_rows(task, read, data_dir, loader, optional=has_fallback)
        if rows is None:  # a local-only source that is absent, with a fallback after it
            continue
        for lang, examples in _located(task, read, rows, data_dir).items():
            if not (read.source.fallback and lang in out):
                out.setdefault(lang, []).extend(examples)
    if split == "test" and task.kind == "retrieval" and task.metric == "f1":  # bitext mining: XTREME's test only
        _check_distractors(task, out, data_dir)
    from trainables.cache import key_of  # the examples know what they were read from (features cache keys)
    from trainables.featcache import Examples

    files = key_of(inputs(asked, split, data_dir))
    return {lang: Examples(exs, {"task": task.name, "sources": [f"{s.hub_id}/{s.config}" for s in task.sources],
                                 "split": split, "lang": lang, "files": files}) for lang, exs in out.items()}


def _check_distractors(task: Task, by_lang: dict[str, list[dict]], data_dir: Path | None) -> None:
    """A mining test corpus must hold distractors on both sides, as the BUCC 2018 training corpora XTREME mines do;
    one that holds only gold-aligned sentences on a side (MTEB's BUCC task after its loader, google/xtreme's
    bucc18.*) is refused with one line."""
    for lang, corpora in by_lang.items():
        for corpus in corpora:
            side = without_distractors(corpus)
            if side:
                where = next((s.local_only for s in task.sources if s.raw and "test" in s.splits), None)
                raise XstiltsError(
                    f"{task.name} test ({lang}): {corpus.get('origin', 'the test corpus')} holds only gold-aligned "
                    f"sentences on its {'non-English' if side == 'sources' else 'English'} side (no distractors), so "
                    f"mining it is not the test XTREME scores", (where or "use the full corpora")
                    + f"; data_dir: {data_dir or '(none)'}")


def _located(task: Task, read: Read, rows: list[dict], data_dir: Path | None) -> dict[str, list[dict]]:
    """`_by_language`, with a bad row named by file and row number (found again, row by row, on error)."""
    try:
        return _by_language(task, read, rows)
    except XstiltsError as exc:
        path = local_path(data_dir, read.source.hub_id, read.config, read.hub_split)
        where = path or f"{read.source.hub_id}/{read.config}:{read.hub_split}"
        for n, row in enumerate(rows):
            try:
                _by_language(task, read, [row])
            except XstiltsError:
                raise XstiltsError(f"{str(exc).split(' — ')[0]} in {where} row {n}",
                                   "fix or drop that row (labels are the task's label names or their indices), or "
                                   "re-run `xstilts data prepare`") from None
        raise


def _by_language(task: Task, read: Read, rows: list[dict]) -> dict[str, list[dict]]:
    normalise = READERS[read.source.reader]
    if not read.source.lang_from_id:
        return {read.langs[0]: normalise(task, rows)}
    by_lang: dict[str, list[dict]] = {}  # TyDiQA: one config, language = id prefix
    for row in rows:
        lang = TYDIQA_PREFIXES.get(str(row["id"]).split("-")[0])
        if lang in read.langs:
            by_lang.setdefault(lang, []).append(row)
    return {lang: normalise(task, rs) for lang, rs in by_lang.items()}


def read_rows(task: Task, read: Read, data_dir: Path | None, loader=hub_load, optional: bool = False):
    """The rows of one source split (raw corpora, local files or the Hub); None if optional and absent."""
    if read.source.raw:
        folder = Path(data_dir or ".") / read.source.hub_id / read.config
        if data_dir is not None and raw_bucc_files(folder, read.config, read.hub_split)[2].exists():
            return read_bucc_raw(folder, read.config, read.hub_split)
        if optional:
            return None
        raise XstiltsError(f"{task.name}: no raw files under {folder} — {read.source.local_only}")
    if optional and read.source.local_only and local_path(data_dir, read.source.hub_id, read.config, read.hub_split) is None:
        return None
    return read_split(task, read.source, read.config, read.hub_split, data_dir, loader)


def inputs(task: Task | str, split: str, data_dir: Path | str | None = None, pin: bool = True) -> list[list]:
    """What `load_split(task, split, data_dir)` may read, for cache keys: `["file", path under data_dir, content
    hash]` for each local file and `["hub", id, config, split, revision]` for each Hub source — its commit SHA now
    (`key_revision`), or with `pin=False` (a check of what is local, asking the Hub nothing) the revision as given."""
    from trainables.cache import file_digest

    data_dir = Path(data_dir) if data_dir is not None else None
    task, langs = _split_task(task, split, data_dir)
    out: list[list] = []
    for read in used_reads(task, split, langs, data_dir):  # a stand-in not read (its official files are here): left out
        if read.source.raw:
            folder = Path(data_dir or ".") / read.source.hub_id / read.config
            paths = [p for p in raw_bucc_files(folder, read.config, read.hub_split) if p.exists()]
        else:
            path = local_path(data_dir, read.source.hub_id, read.config, read.hub_split)
            paths = [path] if path is not None else []
            if not paths and not read.source.local_only:
                out.append(["hub", read.source.hub_id, read.config, read.hub_split,
                            key_revision(read.source) if pin else read.source.revision])
        out += [["file", str(p.relative_to(data_dir)), file_digest(p)] for p in paths]
    return out


def count(task: Task, examples: list[dict]) -> int:
    """Examples in a list; for retrieval, the gold pairs."""
    if task.kind == "retrieval":
        return sum(len(e["gold"]) for e in examples)
    return len(examples)


def inspect(task_name: str, data_dir: Path | str | None) -> dict:
    """`{"task", "splits": {split: {lang: count}}}` after loading and normalisation."""
    task = get_task(task_name)
    splits = {}
    for split in SPLITS:
        by_lang = load_split(task, split, data_dir)
        if by_lang:
            splits[split] = {lang: count(task, exs) for lang, exs in by_lang.items()}
    return {"task": task.name, "splits": splits}


def tag_labels(task: Task, train_examples: Sequence[dict]) -> tuple[str, ...]:
    """Tag names of a tagging task: the table's, or (CCG) sorted from its training examples."""
    return task.labels or tuple(sorted({t for ex in train_examples for t in ex["tags"]}))


def load_mixture(mixture: Mapping[str, float], data_dir: Path | None) -> tuple[dict[str, list], dict[str, list]]:
    """English training examples of a mixture's tasks, each source read once: a task whose sources include
    another mixture task's whole source list leaves those out (ANLI+ contains MNLI: with both in a mixture,
    MNLI is counted once, under mnli). Returns (examples by task, {task: [sources left out]})."""
    from dataclasses import replace

    tasks = [t for t, w in mixture.items() if w > 0]
    out, dropped = {}, {}
    for name in tasks:
        task = get_task(name)
        owned = {(s.hub_id, s.config) for other in tasks if other != name for s in get_task(other).sources
                 if len(get_task(other).sources) == 1 and len(task.sources) > 1}
        keep = tuple(s for s in task.sources if (s.hub_id, s.config) not in owned)
        if len(keep) < len(task.sources):
            dropped[name] = [f"{s.hub_id}/{s.config}" for s in task.sources if s not in keep]
            task = replace(task, sources=keep)
        out[name] = load_split(task, "train", data_dir).get("en", [])
    return out, dropped


# ---------------------------------------------------------------- prepare: the Hub, read once and pinned


def source_shas(data_dir: Path | str) -> dict[str, str]:
    """`{hub_id: commit SHA}` of the Hub sources `prepare` downloaded into data_dir ({} without a manifest)."""
    return {hub_id: entry["sha"] for hub_id, entry in _read_sources(Path(data_dir))["sources"].items()
            if entry.get("sha")}


def _read_sources(data_dir: Path) -> dict:
    path = data_dir / SOURCES_MANIFEST
    if not path.exists():
        return {"sources": {}, "files": {}}
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest.get("sources"), dict):
            raise ValueError("no sources")
    except (ValueError, AttributeError) as exc:
        raise XstiltsError(f"malformed {path}: expected {{\"sources\": {{hub_id: {{\"sha\", \"configs\"}}}}}}",
                           "delete it and re-run `xstilts data prepare --refresh`") from exc
    manifest.setdefault("files", {})
    return manifest


def _union(*lists: Iterable[str]) -> list[str]:
    return sorted({x for items in lists for x in items})


def _write_sources(data_dir: Path, pinned: dict, files: dict) -> None:
    """Merge this run's entries into the manifest on disk (re-read now: another prepare may have written it since)
    and replace it atomically (tmp + rename)."""
    from datetime import datetime, timezone

    manifest = _read_sources(data_dir)
    for hub_id, entry in pinned.items():
        old = manifest["sources"].get(hub_id)
        if old and old.get("sha") == entry["sha"]:  # the same commit: what both runs downloaded
            for config, splits in old.get("configs", {}).items():
                entry["configs"][config] = _union(splits, entry["configs"].get(config, []))
        entry["configs"] = dict(sorted(entry["configs"].items()))
        manifest["sources"][hub_id] = entry
    for hub_id, entry in files.items():
        have = manifest["files"].setdefault(hub_id, {"urls": {}, "configs": {}})
        have["urls"].update(entry["urls"])
        for config, splits in entry["configs"].items():
            have["configs"][config] = _union(have["configs"].get(config, []), splits)
    if not manifest["files"]:
        manifest.pop("files")
    manifest["sources"] = dict(sorted(manifest["sources"].items()))
    manifest["prepared_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f"{SOURCES_MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, data_dir / SOURCES_MANIFEST)


def _http_status(exc: BaseException | None) -> tuple[int | None, float | None]:
    """The HTTP status (and Retry-After seconds) behind an exception from huggingface_hub/datasets/httpx, found
    on it or on its causes; (None, None) when none is an HTTP error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            after = (getattr(response, "headers", None) or {}).get("Retry-After")
            try:
                return status, max(0.0, float(after)) if after is not None else None
            except ValueError:  # an HTTP date: our own backoff instead
                return status, None
        exc = exc.__cause__ or exc.__context__
    return None, None


def hub_retry(what: str, call: Callable, log=print, sleep=time.sleep, tries: int = HUB_TRIES):
    """`call()`, again after a 429/503 from the Hub (waiting its Retry-After, else 1, 2, 4 ... s), at most `tries`
    times in all; then a one-line XstiltsError naming `what`. huggingface_hub retries file downloads and tree
    listings itself, but not dataset info (ours, or the one `load_dataset` makes): this covers the whole call."""
    for attempt in range(1, tries + 1):
        try:
            return call()
        except XstiltsError:
            raise
        except Exception as exc:
            status, after = _http_status(exc)
            if status not in HUB_RETRY_STATUSES:
                raise
            reason = "429 Too Many Requests" if status == 429 else f"{status} Service Unavailable"
            if attempt == tries:
                raise XstiltsError(
                    f"{what}: the Hub answered {reason} {tries} times in a row",
                    "wait a few minutes and re-run the same `xstilts data prepare` (finished files are kept); a "
                    "token (HF_TOKEN or `hf auth login`) gets a higher rate limit") from exc
            wait = min(after if after is not None else 2.0 ** (attempt - 1), HUB_MAX_WAIT_S)
            log(f"{what}: the Hub answered {reason}; retrying in {wait:g} s ({attempt}/{tries - 1})")
            sleep(wait)


@dataclass(frozen=True)
class _Job:
    """One Hub source split to download, for a task (or "earlier prepare": one the manifest lists)."""

    task: str
    source: Source
    config: str
    split: str


def _jobs(task_names: Sequence[str], data_dir: Path, log) -> list[_Job]:
    """Every Hub source split the tasks read (targets: also their training task's), once, in table order; sources
    that are not on the Hub are left out with a line saying where they come from."""
    jobs, seen, advised = [], set(), set()
    tasks = [get_task(n) for n in task_names]
    for task in tasks + [training_task(t) for t in tasks if t.train_on and t.train_on != t.name]:
        for split in SPLITS:
            # a data_dir whose manifest (xstilts.json) lists some languages gets those languages only
            langs = ["en"] if split == "train" else task_languages(task, data_dir, split)
            for read in used_reads(task, split, langs, data_dir):  # no stand-in where the official files are
                if read.source.local_only or read.source.raw:
                    if (read.source.hub_id, read.source.config) not in advised:
                        advised.add((read.source.hub_id, read.source.config))
                        log(f"{task.name}: not on the Hub; put it under {data_dir} yourself: {read.source.local_only}")
                    continue
                if (read.source.hub_id, read.config, read.hub_split) not in seen:
                    seen.add((read.source.hub_id, read.config, read.hub_split))
                    jobs.append(_Job(task.name, read.source, read.config, read.hub_split))
    return jobs


def prepare(task_names: Sequence[str], data_dir: Path | str, loader=hub_load, log=print,
            resolve: Callable[[Source], str] | None = None, refresh: bool = False) -> list[Path]:
    """Download every source split the tasks need into the local layout (for offline clusters), pinned.

    Each Hub source's commit SHA is resolved once (`resolve`, default `hub_sha`: the Hub's dataset info at the
    source's revision, `main` by default) and every split is loaded at that SHA. The manifest
    `<data_dir>/xstilts-sources.json` records them: `{"sources": {hub_id: {"revision": requested or null, "sha":
    40 hex, "configs": {config: [hub split, ...]}}}, "files": {hub_id: {"urls", "configs"}} (raw-file sources
    such as Cosmos QA, which have no SHA), "prepared_at": ISO time}`; `source_shas(data_dir)` reads the SHAs.
    It is merged across runs and replaced atomically: a second `prepare` of other tasks adds to it, and a source
    it already lists is read at the recorded SHA (never re-resolved; its files and SHA are kept) unless `refresh`:
    then the SHA is resolved again and, if it moved, every split of that source the manifest lists is downloaded
    again at the new one. Files already under data_dir are not downloaded again (with `refresh`: unless the
    manifest does not list them at the current SHA). A split is written to a temporary file and renamed, so a
    failure never leaves a half-written split, and the manifest then records what was finished. A 429/503 from the
    Hub is waited out (`hub_retry`). Sources that are not on the Hub (CCGbank, BUCC's sample corpora) are not
    downloaded: `log` says where they come from.

    A custom `loader(source, config, split)` without `resolve` (tests' fake Hubs) is called unpinned and writes
    no manifest; with `resolve` it is called as `loader(source, config, split, revision=sha)`. Returns the files
    written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    data_dir = Path(data_dir)
    pinning = resolve is not None or loader is hub_load
    resolve = resolve or hub_sha
    recorded = _read_sources(data_dir)["sources"] if pinning else {}
    pinned: dict[str, dict] = {}  # hub_id -> this run's manifest entry
    files: dict[str, dict] = {}  # raw-file sources written this run

    def online(hub_id: str) -> None:
        if loader is hub_load and offline():
            raise XstiltsError(f"cannot prepare {hub_id}: the Hub is switched off (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)",
                               "run `xstilts data prepare` where the Hub is reachable, with both unset")

    def pin(source: Source) -> str:
        """The SHA every split of this source is read at: this run's, else the manifest's, else resolved now."""
        hub_id, old = source.hub_id, recorded.get(source.hub_id) or {}
        if hub_id not in pinned:
            revision = source.revision
            if old.get("sha") and not refresh:
                if old.get("revision") != source.revision:
                    log(f"{hub_id}: kept at {old['sha'][:12]} (revision {old.get('revision') or 'main'}); the task "
                        f"table asks for {source.revision or 'main'} — `--refresh` re-pins it")
                sha, revision = old["sha"], old.get("revision")
            else:
                online(hub_id)
                sha = hub_retry(f"{hub_id}@{source.revision or 'main'}", lambda: resolve(source), log)
                if not (isinstance(sha, str) and len(sha) == 40 and all(c in "0123456789abcdef" for c in sha)):
                    raise XstiltsError(f"{hub_id}@{source.revision or 'main'}: the Hub gave no commit SHA ({sha!r})",
                                       "check HF_ENDPOINT points at the Hub (or a mirror that serves dataset info)")
                if old.get("sha") and old["sha"] != sha:
                    log(f"{hub_id}: {old['sha'][:12]} -> {sha[:12]}; its splits are downloaded again")
            configs = {c: list(s) for c, s in old.get("configs", {}).items()} if old.get("sha") == sha else {}
            pinned[hub_id] = {"revision": revision, "sha": sha, "configs": configs}
        return pinned[hub_id]["sha"]

    jobs = _jobs(task_names, data_dir, log)
    if pinning and refresh:  # re-resolve now; a source that moved is downloaded again whole, as the manifest lists it
        for source in {j.source.hub_id: j.source for j in jobs if not j.source.files}.values():
            old = recorded.get(source.hub_id) or {}
            if old.get("sha") and pin(source) != old["sha"]:
                have = {(j.config, j.split) for j in jobs if j.source.hub_id == source.hub_id}
                jobs += [_Job("(earlier prepare)", source, c, s) for c, splits in old.get("configs", {}).items()
                         for s in splits if (c, s) not in have]

    def have(job: _Job, path: Path) -> bool:
        """Already under data_dir: as a file (with `refresh`: and listed in the manifest at this run's SHA)."""
        if not path.exists() or not (pinning and refresh) or job.source.files:
            return path.exists()
        return job.split in pinned.get(job.source.hub_id, {}).get("configs", {}).get(job.config, [])

    written: list[Path] = []
    bar = progress_bar(len(jobs), "data prepare", unit="split")
    try:
        for job in jobs:
            path = data_dir / job.source.hub_id / job.config / f"{job.split}.parquet"
            if have(job, path):
                bar.update(1)
                continue
            bar.set_postfix_str(f"{job.source.hub_id}/{job.config}/{job.split}")
            online(job.source.hub_id)
            pinned_at = {} if job.source.files or not pinning else {"revision": pin(job.source)}
            rows = hub_retry(f"{job.task}: {job.source.hub_id}/{job.config} split {job.split}",
                             lambda: [dict(r) for r in loader(job.source, job.config, job.split, **pinned_at)],
                             log)  # dict(): datasets 5 yields LazyRow
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            try:
                pq.write_table(pa.Table.from_pylist(rows), tmp)
                os.replace(tmp, path)  # atomic: a failure never leaves a half-written split
            finally:
                tmp.unlink(missing_ok=True)
            written.append(path)
            bar.update(1)
            if job.source.files:
                entry = files.setdefault(job.source.hub_id, {"urls": {}, "configs": {}})
                entry["urls"][job.split] = job.source.files[job.split]
                entry["configs"][job.config] = _union(entry["configs"].get(job.config, []), [job.split])
            elif pinning:
                configs = pinned[job.source.hub_id]["configs"]
                configs[job.config] = _union(configs.get(job.config, []), [job.split])
    finally:
        bar.close()
        touched = {h: e for h, e in pinned.items() if e["configs"]}  # a SHA with nothing downloaded at it: not yet
        if touched or files:
            _write_sources(data_dir, touched, files)
    return written
