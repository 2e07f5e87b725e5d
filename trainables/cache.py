"""One content-addressed cache for everything xstilts computes once: the toy model, phase-2 encoders,
phase-3 results, tokenised features.

An entry is a folder `<root>/<kind>-<key>` where `key` hashes a JSON payload of everything that determines
the content (inputs, settings, data fingerprints, code version). The root is meant to be shared storage that
every node of a cluster mounts (NFS, Lustre, ...). Building an entry:
  1. take the entry's lock: `flock` on `<root>/.<kind>-<key>.lock`; where the file system refuses flock (Lustre
     or NFS mounted without lock support), or with XSTILTS_LOCKS=mkdir (for mounts whose flock is node-local), a
     lock folder `.<kind>-<key>.lockdir` made with an atomic mkdir, holding its owner and a heartbeat. Concurrent
     builders of one key wait, then reuse what the first one wrote;
  2. build into `<kind>-<key>.tmp-<host>-<pid>-<random>` (unique across hosts), whose `.xstilts-building`
     file the builder touches every 30 s; write `xstilts-manifest.json` last (every file with its size, plus
     the builder's metadata), then rename the folder into place (atomic on one file system). Should another
     node have published the same key meanwhile, its entry is kept and ours dropped;
  3. a leftover `*.tmp-*` folder is removed only when its builder is provably gone: on this host, its process
     is dead; on another host, its heartbeat is older than `STALE_AFTER_S` (by the file system's own clock, so
     node clocks need not agree). A live build on another node is never touched;
  4. an entry whose manifest is missing, unparsable, or lists a file of another size is invalid and is
     rebuilt (a crash, a full disk or a truncated copy never serves broken content).

  entry = Cache(root).entry("phase2", {"base": ..., "probs": ..., "data": fingerprint(files)})
  path, meta, hit = entry.get_or_build(lambda tmp: {...write files into tmp, return metadata...})
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

from trainables.errors import XstiltsError

MANIFEST = "xstilts-manifest.json"
HEARTBEAT = ".xstilts-building"  # in a build folder (and a lock folder): touched while its owner lives
BEAT_S = 30.0  # heartbeat interval
STALE_AFTER_S = 600.0  # a heartbeat this old (by the file system's clock) means its owner is gone
NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EBADF}


def host() -> str:
    """This node's name as used in temporary names (no '-': names are split on it)."""
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fs_now(folder: Path) -> float:
    """The file system's current time (the mtime of a file just written there): heartbeats written by other
    nodes are compared against it, so clock skew between nodes does not matter."""
    probe = folder / f".now-{host()}-{os.getpid()}-{threading.get_ident()}"
    try:
        probe.write_bytes(b"")
        return probe.stat().st_mtime
    except OSError:  # a full or read-only disk: this node's clock will have to do
        return time.time()
    finally:
        probe.unlink(missing_ok=True)


class Heartbeat:
    """Touch `folder/HEARTBEAT` every BEAT_S seconds in a daemon thread until stopped."""

    def __init__(self, folder: Path):
        self.file = Path(folder) / HEARTBEAT
        self.file.write_text(json.dumps({"host": host(), "pid": os.getpid()}))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="xstilts-heartbeat")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(BEAT_S):
            try:
                os.utime(self.file)
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def owner_gone(folder: Path, now: float | None = None) -> bool:
    """Whether the builder of a `*.tmp-<host>-<pid>-<rand>` folder (or the owner of a lock folder) is gone:
    on this host, its process is dead; elsewhere, its heartbeat (else the folder itself) is older than
    STALE_AFTER_S by the file system's clock. Names of older versions (`.tmp-<pid>`) count as this host's."""
    name = folder.name.rsplit(".tmp-", 1)[-1] if ".tmp-" in folder.name else ""
    parts = name.split("-")
    owner = {}
    try:
        owner = json.loads((folder / HEARTBEAT).read_text())
    except (OSError, ValueError):
        pass
    if len(parts) == 3:
        where, pid = parts[0], parts[1]
    elif len(parts) == 1 and parts[0].isdigit():
        where, pid = host(), parts[0]
    else:
        where, pid = owner.get("host"), str(owner.get("pid", ""))
    if where == host() and pid.isdigit():
        return not _alive(int(pid))
    try:
        beat = (folder / HEARTBEAT).stat().st_mtime if (folder / HEARTBEAT).exists() else folder.stat().st_mtime
    except OSError:
        return True  # already gone
    return (now if now is not None else fs_now(folder.parent)) - beat > STALE_AFTER_S


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
        """The entry's exclusive lock across processes and nodes (flock, else a lock folder: module docstring)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if os.environ.get("XSTILTS_LOCKS", "").lower() != "mkdir":
            with open(self.root / f".{self.kind}-{self.key}.lock", "w") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX)
                except OSError as exc:
                    if exc.errno not in NO_FLOCK:
                        raise
                else:
                    try:
                        yield
                    finally:
                        fcntl.flock(fh, fcntl.LOCK_UN)
                    return
        with self._lock_dir():
            yield

    @contextmanager
    def _lock_dir(self, poll_s: float = 0.5):
        """A lock folder made with mkdir (atomic on NFS and Lustre too), with the owner's heartbeat inside. A
        waiter takes over a folder whose owner is gone (`owner_gone`)."""
        folder = self.root / f".{self.kind}-{self.key}.lockdir"
        while True:
            try:
                folder.mkdir()
                break
            except FileExistsError:
                if owner_gone(folder):
                    shutil.rmtree(folder, ignore_errors=True)
                    continue
                time.sleep(poll_s)
        beat = Heartbeat(folder)
        try:
            yield
        finally:
            beat.stop()
            shutil.rmtree(folder, ignore_errors=True)

    def get(self) -> dict | None:
        """The metadata of a valid entry (no lock, no build), else None."""
        manifest = self.manifest()
        return None if manifest is None else manifest.get("meta", {})

    def get_or_build(self, build: Callable[[Path], dict],
                     accept: Callable[[Path], bool] | None = None) -> tuple[Path, dict, bool]:
        """(path, metadata, hit). `build(tmp)` writes the content into `tmp` and returns its metadata. `accept(path)`
        (default: any valid entry) may refuse a valid entry that lacks something this caller needs (a phase-3 entry
        written before it held predictions): that entry is rebuilt and replaced, under the same key."""
        def usable(meta: dict | None) -> bool:
            return meta is not None and (accept is None or accept(self.path))

        meta = self.get()
        if usable(meta):
            return self.path, meta, True
        with self.lock():
            meta = self.get()  # another process may have built it while we waited
            if usable(meta):
                return self.path, meta, True
            leftovers = list(self.root.glob(f"{self.path.name}.tmp-*"))
            now = fs_now(self.root) if leftovers else None
            for stale in leftovers:  # a killed builder's leftovers; never a live build on another node
                if owner_gone(stale, now):
                    shutil.rmtree(stale, ignore_errors=True)
            tmp = self.path.with_name(f"{self.path.name}.tmp-{host()}-{os.getpid()}-{secrets.token_hex(4)}")
            beat = None
            try:  # the folder and its heartbeat inside: a full disk there is the same clean error as later
                tmp.mkdir(parents=True)
                beat = Heartbeat(tmp)
                meta = build(tmp) or {}
                beat.stop()
                (tmp / HEARTBEAT).unlink(missing_ok=True)
                meta = self._publish(tmp, meta, usable)
            except Exception as exc:
                if beat is not None:
                    beat.stop()
                shutil.rmtree(tmp, ignore_errors=True)
                if isinstance(exc, OSError) or _out_of_space(exc):
                    reason = "the disk is full" if _out_of_space(exc) else getattr(exc, "strerror", None) or exc
                    raise XstiltsError(f"cannot write cache entry {self.path} ({reason})",
                                       f"free space under {self.root} or set cache_dir elsewhere, then run again "
                                       f"(a search: `xstilts search ... --resume`)") from exc
                raise
            except BaseException:
                if beat is not None:
                    beat.stop()
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return self.path, meta, False

    def _publish(self, tmp: Path, meta: dict, usable: Callable[[dict | None], bool] | None = None) -> dict:
        """Move a finished build into place; returns the metadata of the entry now there (another node's, when
        it published the same key first: a lock that is only node-local must not cost a valid entry). An entry
        there that `usable` refuses is replaced like an invalid one."""
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in tmp.rglob("*") if p.is_file()}
        with open(tmp / MANIFEST, "w") as fh:  # the manifest last: its presence marks a complete entry
            json.dump({"kind": self.kind, "key": self.key, "files": files, "meta": meta}, fh, indent=1,
                      default=str)
            fh.flush()
            os.fsync(fh.fileno())
        theirs = self.get()
        if theirs is not None and (usable is None or usable(theirs)):
            shutil.rmtree(tmp, ignore_errors=True)
            return theirs
        broken = self.path.with_name(f"{self.path.name}.broken-{host()}-{os.getpid()}-{secrets.token_hex(4)}")
        if self.path.exists():  # an invalid (or refused) entry: move it aside, then drop it
            self.path.rename(broken)
        tmp.rename(self.path)
        shutil.rmtree(broken, ignore_errors=True)
        return meta


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
