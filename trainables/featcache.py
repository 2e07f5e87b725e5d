"""Tokenised features, computed once per content and read back memory-mapped.

Every featurisation of the pipeline goes through `cached(featurize_fn, examples, tokenizer, max_length, ...)`.
When the examples know where they came from (`Examples.key`: the task, split, language, the content hashes
of the data files they were read from, any slice or hold-out) and the pipeline has set its cache (`use`), the
features are a cache entry `features-<key>` (`trainables.cache`: locked, atomic, rebuilt when broken) whose
key adds the tokenizer's identity (a hash of its full serialisation), the featuriser, its settings and the
code that computes features (`trainables.codever`). A second trial on the same data therefore tokenises
nothing, and concurrent trials compute an entry once. Features are computed a chunk of examples at a time
with a progress bar (`trainables.features.in_chunks`).

Features are stored columnar as .npy files (ragged fields as a flat array plus offsets) and opened with
`mmap_mode="r"`: reading them costs page faults, not parsing. `FeatureSet` then behaves like the list of
dicts the featurisers return (`len`, `[i]` -> dict of arrays and numbers), so training and evaluation code
does not care where its features came from.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from trainables.codever import code_version
from trainables.features import in_chunks

_ROOT: list[Path] = []  # the features cache of this process (set by the pipeline it runs)
STATS = {"seconds": 0.0, "built": 0, "hits": 0}  # time this process spent getting features, and how


class Examples(list):
    """A list of normalised examples with `key`: what determines its content (None: unknown)."""

    def __init__(self, items=(), key: dict | None = None):
        super().__init__(items)
        self.key = key


def take(examples: Sequence[dict], n: int | None) -> Sequence[dict]:
    """The first n examples, keeping (and extending) their key."""
    if n is None or n >= len(examples):
        return examples
    key = getattr(examples, "key", None)
    return Examples(examples[:n], {**key, "first": n} if key else None)


def derived(items: list, key: dict | None, how: dict) -> Examples:
    """A list computed from examples keyed `key` (a hold-out, one side of a corpus, its unique sentences),
    keyed by theirs plus `how` (no key: unknown, not cached)."""
    return Examples(items, {**key, **how} if key else None)


def use(root: Path | str | None) -> None:
    """Cache features under `root` (a pipeline's cache_dir) from now on in this process; None: off."""
    _ROOT[:] = [Path(root)] if root is not None else []


def tokenizer_id(tok) -> str:
    """A hash of everything that decides how `tok` tokenises (its full serialisation and special tokens),
    remembered on the tokenizer object."""
    known = getattr(tok, "_xstilts_id", None)
    if known is None:
        backend = getattr(tok, "backend_tokenizer", None)
        text = backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
        text += json.dumps(list(tok.all_special_tokens))
        known = hashlib.sha256(text.encode()).hexdigest()[:20]
        tok._xstilts_id = known
    return known


def cached(fn: Callable, examples: Sequence, tok, max_length: int, **settings):
    """`fn(examples, tok, max_length, **settings)`, from the features cache when the examples have a key."""
    started = time.perf_counter()
    try:
        return _cached(fn, examples, tok, max_length, settings)
    finally:
        STATS["seconds"] += time.perf_counter() - started


def _cached(fn: Callable, examples: Sequence, tok, max_length: int, settings: dict):
    key = getattr(examples, "key", None)
    if key is None or not _ROOT:
        STATS["built"] += 1
        return in_chunks(fn, examples, tok, max_length, **settings)
    from trainables.cache import Cache

    payload = {"tokenizer": tokenizer_id(tok), "featurizer": fn.__name__, "max_length": max_length,
               "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(settings.items())},
               "examples": key, "code": code_version("features")}
    entry = Cache(_ROOT[0]).entry("features", payload)
    path, _, hit = entry.get_or_build(lambda tmp: FeatureSet.save(in_chunks(fn, examples, tok, max_length, **settings), tmp))
    STATS["hits" if hit else "built"] += 1
    return FeatureSet.load(path)


# ---------------------------------------------------------------- columnar storage


def _is_seq(x) -> bool:
    return isinstance(x, (list, tuple, np.ndarray))


def _kind_of(values: list) -> str:
    first = next((v for v in values if v is not None), 0)
    if isinstance(first, str):
        return "str"
    if not _is_seq(first):
        return "int"
    inner = [x for v in values for x in v]
    if not inner or not _is_seq(inner[0]):
        return "seq"
    return "pairs" if all(len(x) == 2 for x in inner) else "nested"  # QA offsets: (start, end) per token


class FeatureSet(Sequence):
    """Features as columns: "int" [n], "str" [n], "seq" flat + offsets [n + 1], "pairs" (QA's character span of
    each token) [tokens, 2] + offsets, "nested" (lists of sequences: multiple-choice inputs) flat + inner offsets
    + offsets."""

    def __init__(self, columns: dict[str, dict[str, np.ndarray]], kinds: dict[str, str], n: int):
        self.columns, self.kinds, self.n = columns, kinds, n

    @staticmethod
    def save(features: list[dict], folder: Path) -> dict:
        kinds = {k: _kind_of([f[k] for f in features]) for k in (features[0] if features else {})}
        for name, kind in kinds.items():
            values = [f[name] for f in features]
            if kind in ("int", "str"):
                np.save(folder / f"{name}.npy", np.asarray(values))
                continue
            if kind == "pairs":  # per feature a [tokens, 2] array
                np.save(folder / f"{name}.flat.npy", np.asarray([x for v in values for x in v], dtype=np.int32).reshape(-1, 2))
                np.save(folder / f"{name}.offsets.npy", np.cumsum([0] + [len(v) for v in values]))
                continue
            if kind == "nested":  # per feature a list of sequences
                inner = [x for v in values for x in v]
                np.save(folder / f"{name}.inner.npy", np.cumsum([0] + [len(x) for x in inner]))
                flat, sizes = [item for x in inner for item in x], [len(v) for v in values]
            else:
                flat, sizes = [x for v in values for x in v], [len(v) for v in values]
            flat = np.asarray(flat)
            if flat.dtype.kind in "iu":
                flat = flat.astype(np.int32)
            np.save(folder / f"{name}.flat.npy", flat)
            np.save(folder / f"{name}.offsets.npy", np.cumsum([0] + sizes))
        meta = {"n": len(features), "kinds": kinds}
        (folder / "features.json").write_text(json.dumps(meta))
        return meta

    @classmethod
    def load(cls, folder: Path) -> "FeatureSet":
        meta = json.loads((Path(folder) / "features.json").read_text())
        columns = {}
        for name, kind in meta["kinds"].items():
            parts = ("",) if kind in ("int", "str") else (".flat", ".offsets") + ((".inner",) if kind == "nested" else ())
            # plain ndarray views of the memory maps: slicing them skips np.memmap's per-slice bookkeeping
            columns[name] = {p or "values": np.asarray(np.load(Path(folder) / f"{name}{p}.npy", mmap_mode="r"))
                             for p in parts}
        return cls(columns, meta["kinds"], meta["n"])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        out = {}
        for name, kind, col in self._plan:
            if kind == "scalar":
                value = col["values"][i]
                out[name] = value.item() if hasattr(value, "item") else value
            elif kind == "flat":
                offsets = col[".offsets"]
                out[name] = col[".flat"][offsets[i]:offsets[i + 1]]
            else:  # a list of sequences: slice the flat array at the inner offsets
                a, b = int(col[".offsets"][i]), int(col[".offsets"][i + 1])
                inner = col[".inner"][a:b + 1]
                out[name] = [col[".flat"][inner[k]:inner[k + 1]] for k in range(b - a)]
        return out

    @property
    def _plan(self) -> list:
        """(field, how to read it, its arrays), computed once: reading a feature is a few array slices."""
        if not hasattr(self, "_plan_cache"):
            how = {"int": "scalar", "str": "scalar", "seq": "flat", "pairs": "flat", "nested": "nested"}
            self._plan_cache = [(name, how[kind], self.columns[name]) for name, kind in self.kinds.items()]
        return self._plan_cache

    def lengths(self) -> np.ndarray:
        """Tokens per feature (all choices of a multiple-choice feature together), without building dicts."""
        col = self.columns["input_ids"]
        if self.kinds["input_ids"] == "seq":
            return np.diff(col[".offsets"])
        return np.diff(col[".inner"][np.asarray(col[".offsets"])])
