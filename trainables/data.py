"""The data layer: read every task from a local data_dir or the Hub, and normalise it per kind.

A source is read from `<data_dir>/<hub_id>/<config>/<split>.{parquet,jsonl,csv}` when that file exists
(columns exactly as on the Hub), else from the Hub with `datasets` 5.x. Both paths yield the same rows,
so one set of readers (`trainables.readers`) normalises them into examples of the task's kind:

  classification / pair_classification  {"text_a", "text_b"?, "label": int}
  multiple_choice                       {"context", "choices": [str], "label": int}
  span_qa                               {"id", "context", "question", "answers": {"text", "answer_start"}}
  tagging                               {"tokens": [str], "tags": [str]}       (tag *names*, not ids)
  retrieval                             {"sources": [str], "targets": [str], "gold": [[i, j]]}  (one per language)
Raw corpora that are not on the Hub (BUCC 2018's sample corpora, its dev set) are read from their official
release layout under data_dir (`bucc2018/<xx>-en/<xx>-en.sample.{xx,en,gold}`).

Inspect:  xstilts data inspect xnli --data-dir toy_data --json
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from trainables.errors import XstiltsError
from trainables.readers import READERS, raw_bucc_files, read_bucc_raw
from trainables.tasks import TYDIQA_PREFIXES, Source, Task, get_task, training_task

SPLITS = ("train", "validation", "test")
SUFFIXES = (".parquet", ".jsonl", ".csv")
MANIFEST = "xstilts.json"  # a data_dir that holds only some languages lists them here


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


def hub_load(source: Source, config: str, split: str) -> Iterable[dict]:
    """Load one split from the Hub with datasets 5.x (no loading scripts)."""
    from datasets import load_dataset

    if source.files:  # raw files (Cosmos QA): the csv/json builders, no script
        url = source.files[split]
        builder = "csv" if url.endswith(".csv") else "json"
        return load_dataset(builder, data_files={split: url}, split=split)
    if source.revision == "refs/convert/parquet":  # the viewer's export: <config>/<split>/*.parquet
        return load_dataset(source.hub_id, data_dir=config, revision=source.revision, split=split)
    return load_dataset(source.hub_id, config, split=split, revision=source.revision)


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
    from trainables.cache import key_of  # the examples know what they were read from (features cache keys)
    from trainables.featcache import Examples

    files = key_of(inputs(asked, split, data_dir))
    return {lang: Examples(exs, {"task": task.name, "sources": [f"{s.hub_id}/{s.config}" for s in task.sources],
                                 "split": split, "lang": lang, "files": files}) for lang, exs in out.items()}


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


def inputs(task: Task | str, split: str, data_dir: Path | str | None = None) -> list[list]:
    """What `load_split(task, split, data_dir)` may read, for cache keys: `["file", path under data_dir, content
    hash]` for each local file and `["hub", id, config, split, revision]` for each Hub source."""
    from trainables.cache import file_digest

    data_dir = Path(data_dir) if data_dir is not None else None
    task, langs = _split_task(task, split, data_dir)
    out: list[list] = []
    for read in plan(task, split, langs):
        if read.source.raw:
            folder = Path(data_dir or ".") / read.source.hub_id / read.config
            paths = [p for p in raw_bucc_files(folder, read.config, read.hub_split) if p.exists()]
        else:
            path = local_path(data_dir, read.source.hub_id, read.config, read.hub_split)
            paths = [path] if path is not None else []
            if not paths and not read.source.local_only:
                out.append(["hub", read.source.hub_id, read.config, read.hub_split, read.source.revision])
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


def prepare(task_names: Sequence[str], data_dir: Path | str, loader=hub_load, log=print) -> list[Path]:
    """Download every source split the tasks need into the local layout (for offline clusters). Sources that
    are not on the Hub (CCGbank, BUCC's sample corpora) are not downloaded: `log` says where they come from."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data_dir = Path(data_dir)
    written, advised = [], set()
    tasks = [get_task(n) for n in task_names]
    for task in tasks + [training_task(t) for t in tasks if t.train_on and t.train_on != t.name]:
        for split in SPLITS:
            langs = ["en"] if split == "train" else list(task.languages_for(split))
            for read in plan(task, split, langs):
                if read.source.local_only or read.source.raw:
                    if (read.source.hub_id, read.source.config) not in advised:
                        advised.add((read.source.hub_id, read.source.config))
                        log(f"{task.name}: not on the Hub; put it under {data_dir} yourself: {read.source.local_only}")
                    continue
                path = data_dir / read.source.hub_id / read.config / f"{read.hub_split}.parquet"
                if path.exists() or path in written:
                    continue
                rows = [dict(r) for r in loader(read.source, read.config, read.hub_split)]
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".parquet.tmp")
                pq.write_table(pa.Table.from_pylist(rows), tmp)
                tmp.rename(path)  # atomic: a crash never leaves a half-written split
                written.append(path)
    return written
