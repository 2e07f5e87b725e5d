"""A local stand-in for the Hugging Face Hub: the endpoints datasets 5.x and huggingface_hub call, on 127.0.0.1.

Point `HF_ENDPOINT` at `HubStandIn.url` (before huggingface_hub is imported: it reads the variable at import, so
run the code under test in a subprocess) and `load_dataset("facebook/xnli", "de", split="validation")` reads the
repos given here. Served, in the Hub's own shapes (observed from datasets 5.2 / huggingface_hub 2.4):

  GET  /api/datasets/<ns>/<name>                       dataset info: id, sha, siblings, cardData ("main")
  GET  /api/datasets/<ns>/<name>/revision/<rev>        the same at a branch name or a commit SHA
  GET  /api/datasets/<ns>/<name>/tree/<rev>[/<path>]   a folder listing (?recursive=true&expand=...)
  POST /api/datasets/<ns>/<name>/paths-info/<rev>      form `paths=...` (repeated): entries of those paths
  HEAD /datasets/<ns>/<name>/resolve/<rev>/<path>      X-Repo-Commit, ETag (X-Linked-Etag/-Size for LFS files),
  GET  /datasets/<ns>/<name>/resolve/<rev>/<path>      Content-Length; GET sends the bytes (Range supported)
  GET  /api/agent-harnesses                            huggingface_hub's agent registry (empty here)

Revisions are branch names (`main`; `refs%2Fconvert%2Fparquet`, URL-encoded as huggingface_hub sends them) or a
branch's 40-hex commit SHA; `tree` ignores `expand` (no lastCommit/security fields).
Errors carry the Hub's `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound), which huggingface_hub
turns into its typed errors. Every request is counted per path (`count`, `requests`, `log`), and `fail(prefix)`
answers the next request(s) under a path prefix with 429 + `Retry-After`.

What `load_dataset(repo, config, split=..., revision=sha)` asks, in order (datasets 5.2): dataset info at the
revision, HEAD+GET README.md, HEAD probes for `<name>.py`, `.huggingface.yaml`, `dataset_infos.json` (404 here),
tree listings of the root and the config's folder, then HEAD+GET of each of the config's data files (all its
splits, not only the one asked for). `prepare` adds one dataset-info call at the branch per source. paths-info is
what `HfApi.get_paths_info` / `file_exists` and some HfFileSystem paths use.

`from_layout(rows)` turns rows keyed like `tests/hub_fixtures.ROWS` (`<hub id>/<config>/<split>.parquet`) into
repos laid out as the real ones (`<config>/<split>-00000-of-00001.parquet` plus a README.md whose YAML `configs:`
block maps each config's splits to its files, as nyu-mll/glue, facebook/xnli and paws-x have on the Hub).

Standalone:  python tests/hub_server.py   (serves hub_fixtures.ROWS until Ctrl-C, prints the URL)
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".parquet", ".arrow")  # stored with git-lfs on the Hub (paths-info/tree carry "lfs")
SHARD = "-00000-of-00001"


def parquet_bytes(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def readme(configs: dict[str, dict[str, str]]) -> bytes:
    """A dataset card whose YAML `configs:` block maps each config's splits to file patterns."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split, pattern in splits.items():
            lines += [f"  - split: {split}", f"    path: {pattern}"]
    return ("\n".join(lines + ["---", "", "A local stand-in repo for tests.", ""])).encode()


def from_layout(rows: dict[str, list[dict]]) -> dict[str, dict[str, bytes]]:
    """`{"<ns>/<name>/<config>/<split>.parquet": rows}` -> `{repo id: {path in repo: bytes}}` in the Hub's layout."""
    files: dict[str, dict[str, bytes]] = {}
    configs: dict[str, dict[str, dict[str, str]]] = {}
    for rel, items in rows.items():
        parts = rel.split("/")
        if len(parts) != 4 or not rel.endswith(".parquet"):
            continue  # not a Hub repo file (ccgbank, raw BUCC corpora, Cosmos QA's CSV)
        ns, name, config, split = parts[0], parts[1], parts[2], parts[3][: -len(".parquet")]
        repo = f"{ns}/{name}"
        files.setdefault(repo, {})[f"{config}/{split}{SHARD}.parquet"] = parquet_bytes(items)
        configs.setdefault(repo, {}).setdefault(config, {})[split] = f"{config}/{split}-*"
    for repo, cfgs in configs.items():
        files[repo]["README.md"] = readme(cfgs)
        files[repo][".gitattributes"] = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    return files


def _git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Tree:
    """One revision of one repo: files, their hashes, the commit SHA."""

    def __init__(self, repo: str, branch: str, files: dict[str, bytes]):
        self.files = dict(files)
        self.blob = {p: _git_blob(d) for p, d in self.files.items()}
        self.sha256 = {p: hashlib.sha256(d).hexdigest() for p, d in self.files.items()}
        digest = hashlib.sha1(f"{repo}@{branch}".encode())
        for path in sorted(self.files):
            digest.update(f"{path}\0{self.blob[path]}\n".encode())
        self.sha = digest.hexdigest()
        self.dirs = {"/".join(p.split("/")[:i]) for p in self.files for i in range(1, p.count("/") + 1)}

    def entry(self, path: str) -> dict | None:
        if path in self.files:
            data = self.files[path]
            out = {"type": "file", "oid": self.blob[path], "size": len(data), "path": path}
            if path.endswith(LFS_SUFFIXES):
                out["lfs"] = {"oid": self.sha256[path], "size": len(data), "pointerSize": 134}
            return out
        if path in self.dirs:
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
        return None

    def children(self, folder: str, recursive: bool) -> list[dict]:
        prefix = f"{folder}/" if folder else ""
        names = sorted(p for p in self.dirs | set(self.files) if p.startswith(prefix) and p != folder)
        if not recursive:
            names = [p for p in names if "/" not in p[len(prefix):]]
        return [self.entry(p) for p in names]


class HubStandIn:
    """A threaded HTTP server on 127.0.0.1 (a free port) answering like the Hub for the repos given.

    `repos`: `{repo id: {path in repo: bytes}}` (the `main` branch); `branches`: `{repo id: {branch: files}}` for
    others (e.g. `refs/convert/parquet`). Use as a context manager, or `start()` / `stop()`.
    """

    def __init__(self, repos: dict[str, dict[str, bytes]],
                 branches: dict[str, dict[str, dict[str, bytes]]] | None = None):
        self.trees: dict[str, dict[str, _Tree]] = {}
        for repo, files in repos.items():
            self.trees.setdefault(repo, {})["main"] = _Tree(repo, "main", files)
        for repo, by_branch in (branches or {}).items():
            for branch, files in by_branch.items():
                self.trees.setdefault(repo, {})[branch] = _Tree(repo, branch, files)
        self.requests: Counter[str] = Counter()  # path (URL-decoded, no query) -> requests seen
        self.log: list[tuple[str, str, int]] = []  # (method, path, status)
        self._failures: list[list] = []  # [prefix, remaining, status, retry_after, method, after]
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ control

    def sha(self, repo: str, branch: str = "main") -> str:
        return self.trees[repo][branch].sha

    def fail(self, prefix: str, times: int = 1, status: int = 429, retry_after: int | None = 1,
             method: str | None = None, after: int = 0) -> None:
        """Answer `times` requests (of `method`, default any) whose path starts with `prefix` with `status` and
        `Retry-After: retry_after` (seconds; None: no header), once `after` such requests were answered normally."""
        with self._lock:
            self._failures.append([prefix, times, status, retry_after, method, after])

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def count(self, prefix: str = "") -> int:
        """Requests seen whose path starts with `prefix`."""
        with self._lock:
            return sum(n for p, n in self.requests.items() if p.startswith(prefix))

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.log.clear()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "HubStandIn":
        stand_in = self

        class Handler(_Handler):
            hub = stand_in

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-stand-in",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "HubStandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ lookups

    def _tree(self, repo: str, rev: str) -> _Tree | str:
        branches = self.trees.get(repo)
        if branches is None:
            return "RepoNotFound"
        if rev in branches:
            return branches[rev]
        for tree in branches.values():
            if tree.sha == rev:
                return tree
        return "RevisionNotFound"

    def _injected(self, method: str, path: str) -> tuple[int, int | None] | None:
        with self._lock:
            for rule in self._failures:
                if path.startswith(rule[0]) and rule[1] > 0 and rule[4] in (None, method):
                    if rule[5] > 0:
                        rule[5] -= 1
                        continue
                    rule[1] -= 1
                    return rule[2], rule[3]
        return None


_API = re.compile(r"^/api/datasets/([^/]+/[^/]+)(?:/(revision|tree|paths-info)/([^/]+)(?:/(.*))?)?$")
_RESOLVE = re.compile(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubStandIn

    def log_message(self, *args) -> None:  # quiet: the stand-in keeps its own log
        pass

    # ------------------------------------------------------------ plumbing

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)
        self.hub.log.append((self.command, self._path, status))

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str | None, message: str, head: bool = False) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _begin(self) -> bool:
        """Count the request; answer an injected failure. False when the request was answered."""
        raw = urlsplit(self.path)
        self._raw_path, self._query = raw.path, parse_qs(raw.query)
        self._path = unquote(raw.path)
        with self.hub._lock:
            self.hub.requests[self._path] += 1
        injected = self.hub._injected(self.command, self._path)
        if injected is not None:
            status, retry_after = injected
            self._drain()
            headers = {"Content-Type": "application/json"}
            if retry_after is not None:
                headers["Retry-After"] = retry_after
            self._send(status, json.dumps({"error": "Too Many Requests (stand-in)"}).encode(), headers,
                       head=self.command == "HEAD")
            return False
        return True

    def _drain(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # ------------------------------------------------------------ verbs

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_POST(self) -> None:
        if not self._begin():
            return
        body = self._drain()
        m = _API.match(self._raw_path)
        if not m or m.group(2) != "paths-info":
            return self._error(404, None, f"no such endpoint: POST {self._path}")
        tree = self.hub._tree(m.group(1), unquote(m.group(3)))
        if isinstance(tree, str):
            return self._error(404, tree, f"{m.group(1)}@{unquote(m.group(3))}: {tree}")
        ctype = self.headers.get("Content-Type", "")
        form = json.loads(body or b"{}") if "json" in ctype else parse_qs(body.decode(), keep_blank_values=True)
        paths = form.get("paths", [])
        paths = [paths] if isinstance(paths, str) else paths
        found = [tree.entry(p.strip("/")) for p in paths]
        self._json(200, [e for e in found if e is not None])  # the Hub leaves out paths that do not exist

    def _dispatch(self, head: bool) -> None:
        if not self._begin():
            return
        m = _RESOLVE.match(self._raw_path)
        if m:
            return self._resolve(m.group(1), unquote(m.group(2)), unquote(m.group(3)), head)
        if self._path == "/api/agent-harnesses":  # huggingface_hub's best-effort agent registry (at import)
            return self._json(200, {"standardEnvVars": [], "harnesses": {}})
        m = _API.match(self._raw_path)
        if not m or m.group(2) == "paths-info":
            return self._error(404, None, f"no such endpoint: {self.command} {self._path}", head)
        repo, kind, rev = m.group(1), m.group(2), unquote(m.group(3) or "main")
        tree = self.hub._tree(repo, rev)
        if isinstance(tree, str):
            return self._error(404, tree, f"{repo}@{rev}: {tree}", head)
        if kind == "tree":
            folder = unquote(m.group(4) or "").strip("/")
            if folder and folder not in tree.dirs:
                return self._error(404, "EntryNotFound", f"{folder} does not exist on {rev}", head)
            recursive = self._query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return self._json(200, tree.children(folder, recursive))
        return self._json(200, self._info(repo, tree))

    def _info(self, repo: str, tree: _Tree) -> dict:
        card = None
        if "README.md" in tree.files:
            import yaml

            text = tree.files["README.md"].decode()
            if text.startswith("---"):
                card = yaml.safe_load(text.split("---")[1])
        return {"_id": hashlib.md5(repo.encode()).hexdigest()[:24], "id": repo, "author": repo.split("/")[0],
                "sha": tree.sha, "lastModified": "2024-01-01T00:00:00.000Z", "createdAt": "2022-01-01T00:00:00.000Z",
                "private": False, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": [], "cardData": card, "usedStorage": sum(len(d) for d in tree.files.values()),
                "siblings": [{"rfilename": p} for p in sorted(tree.files)]}

    def _resolve(self, repo: str, rev: str, path: str, head: bool) -> None:
        tree = self.hub._tree(repo, rev)
        if isinstance(tree, str):
            return self._error(404, tree, f"{repo}@{rev}: {tree}", head)
        if path not in tree.files:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}", head)
        data = tree.files[path]
        headers = {"X-Repo-Commit": tree.sha, "ETag": f'"{tree.blob[path]}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if path.endswith(LFS_SUFFIXES):
            headers.update({"X-Linked-Etag": f'"{tree.sha256[path]}"', "X-Linked-Size": len(data)})
        rng = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
        if rng and data:
            start = int(rng.group(1)) if rng.group(1) else max(0, len(data) - int(rng.group(2)))
            end = int(rng.group(2)) if rng.group(1) and rng.group(2) else len(data) - 1
            end = min(end, len(data) - 1)
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start:end + 1], headers, head)
        headers["Content-Length"] = len(data)
        self._send(200, data, headers, head)


def resolve_url(endpoint: str, repo: str, rev: str, path: str) -> str:
    return f"{endpoint}/datasets/{repo}/resolve/{quote(rev, safe='')}/{path}"


if __name__ == "__main__":
    import sys
    import time

    sys.path.insert(0, str(Path(__file__).parent))
    import hub_fixtures

    with HubStandIn(from_layout(hub_fixtures.ROWS)) as hub:
        print(f"HF_ENDPOINT={hub.url}", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
