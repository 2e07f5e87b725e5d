"""One content-addressed cache for everything xstilts computes once: the toy model, phase-2 encoders,
phase-3 results, tokenised features.

An entry is a folder `<root>/<kind>-<key>` where `key` hashes a JSON payload of everything that determines
the content (inputs, settings, data fingerprints, code version). Building an entry:
  1. take the entry's file lock (`<root>/.<kind>-<key>.lock`): concurrent builders of one key wait,
     then reuse what the first one wrote;
  2. build into `<kind>-<key>.tmp-<pid>`, write `xstilts-manifest.json` last (every file with its size,
     plus the builder's metadata), then rename the folder into place (atomic on one file system);
  3. an entry whose manifest is missing, unparsable, or lists a file of another size is invalid and is
     rebuilt (a crash, a full disk or a truncated copy never serves broken content).

  entry = Cache(root).entry("phase2", {"base": ..., "probs": ..., "data": fingerprint(files)})
  path, meta, hit = entry.get_or_build(lambda tmp: {...write files into tmp, return metadata...})
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

from trainables.errors import XstiltsError

MANIFEST = "xstilts-manifest.json"


def key_of(payload: object) -> str:
    """A stable 20-hex-digit key of a JSON-able payload (sorted keys; paths and others via str)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


@lru_cache(maxsize=4096)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """Content hash of a file (memoised per process by path, size and modification time)."""
    st = Path(path).stat()
    return _digest(str(path), st.st_size, st.st_mtime_ns)


def fingerprint(files: Iterable[Path], root: Path | None = None) -> list[list[str]]:
    """[[relative name, content hash], ...] of files, sorted: what cache keys record of input data."""
    out = []
    for p in sorted(Path(f) for f in files):
        out.append([str(p.relative_to(root)) if root else str(p), file_digest(p)])
    return out


def _out_of_space(exc: BaseException) -> bool:
    """An error that comes of a full disk: ENOSPC/EDQUOT anywhere in its chain, or torch.save's own wording."""
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(s in str(exc) for s in ("No space left", "file write failed", "unexpected pos")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass(frozen=True)
class Entry:
    root: Path
    kind: str
    key: str

    @property
    def path(self) -> Path:
        return self.root / f"{self.kind}-{self.key}"

    def manifest(self) -> dict | None:
        """The manifest of a valid entry, else None (absent, unparsable, or a file of the wrong size)."""
        try:
            manifest = json.loads((self.path / MANIFEST).read_text())
            if all((self.path / f).stat().st_size == size for f, size in manifest["files"].items()):
                return manifest
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        return None

    def valid(self) -> bool:
        return self.manifest() is not None

    @contextmanager
    def lock(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{self.kind}-{self.key}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def get(self) -> dict | None:
        """The metadata of a valid entry (no lock, no build), else None."""
        manifest = self.manifest()
        return None if manifest is None else manifest.get("meta", {})

    def get_or_build(self, build: Callable[[Path], dict]) -> tuple[Path, dict, bool]:
        """(path, metadata, hit). `build(tmp)` writes the content into `tmp` and returns its metadata."""
        meta = self.get()
        if meta is not None:
            return self.path, meta, True
        with self.lock():
            meta = self.get()  # another process may have built it while we waited
            if meta is not None:
                return self.path, meta, True
            for stale in self.root.glob(f"{self.path.name}.tmp-*"):  # a killed builder's leftovers (we hold
                shutil.rmtree(stale, ignore_errors=True)                # the lock: nobody else is building)
            tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
            tmp.mkdir(parents=True)
            try:
                meta = build(tmp) or {}
                self._publish(tmp, meta)
            except Exception as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                if isinstance(exc, OSError) or _out_of_space(exc):
                    reason = "the disk is full" if _out_of_space(exc) else getattr(exc, "strerror", None) or exc
                    raise XstiltsError(f"cannot write cache entry {self.path} ({reason})",
                                       f"free space under {self.root} or set cache_dir elsewhere, then run again "
                                       f"(a search: `xstilts search ... --resume`)") from exc
                raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return self.path, meta, False

    def _publish(self, tmp: Path, meta: dict) -> None:
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in tmp.rglob("*") if p.is_file()}
        with open(tmp / MANIFEST, "w") as fh:  # the manifest last: its presence marks a complete entry
            json.dump({"kind": self.kind, "key": self.key, "files": files, "meta": meta}, fh, indent=1,
                      default=str)
            fh.flush()
            os.fsync(fh.fileno())
        broken = self.path.with_name(f"{self.path.name}.broken-{os.getpid()}")
        if self.path.exists():  # an invalid entry: move it aside, then drop it
            self.path.rename(broken)
        tmp.rename(self.path)
        shutil.rmtree(broken, ignore_errors=True)


class Cache:
    """Entries under one root folder (a pipeline's `cache_dir`)."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()

    def entry(self, kind: str, payload: object) -> Entry:
        return Entry(self.root, kind, key_of(payload))


def entry_id(path: Path | str) -> str | None:
    """`<kind>-<key>` of a cache entry folder (what other keys record of it), else None."""
    path = Path(str(path))
    manifest = path / MANIFEST
    if manifest.exists():
        try:
            m = json.loads(manifest.read_text())
            return f"{m['kind']}-{m['key']}"
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None
