"""`xstilts data prepare`: the Hub read once, pinned to commit SHAs, 429s ridden out — against a local Hub stand-in.

The stand-in (`tests/hub_server.py`) serves `hub_fixtures` rows in the Hub's own repo layout and API shapes on
127.0.0.1; `prepare` runs in a subprocess with `HF_ENDPOINT` pointing at it (huggingface_hub reads it at import)
and a fresh HF_HOME / HF_DATASETS_CACHE, so nothing touches the network or a shared cache. The fast tests drive
`prepare` in-process with a fake Hub (loader + resolver).

Run: pytest tests/test_hub_prepare.py        (the stand-in tests are marked slow)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import hub_fixtures
from hub_server import HubStandIn, from_layout, parquet_bytes
from trainables import data
from trainables.errors import XstiltsError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHA_A, SHA_B = "a" * 40, "b" * 40


# ---------------------------------------------------------------- fast: hub_retry and the manifest, fake Hub


class _HTTPError(Exception):
    """Shaped like huggingface_hub's HfHubHTTPError: a `.response` with status_code and headers."""

    def __init__(self, status, headers=None):
        super().__init__(f"HTTP {status}")
        self.response = type("Response", (), {"status_code": status, "headers": headers or {}})()


def test_hub_retry_honours_retry_after_and_gives_up_in_one_line():
    waits, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise _HTTPError(429, {"Retry-After": "7"})
        if len(calls) == 2:
            try:
                raise _HTTPError(503)
            except _HTTPError as inner:  # wrapped, as datasets sometimes re-raises: found on the cause chain
                raise RuntimeError("wrapped") from inner
        return "ok"

    assert data.hub_retry("x", flaky, log=lambda *a: None, sleep=waits.append) == "ok"
    assert waits == [7.0, 2.0]  # Retry-After, then our own backoff (1, 2, 4 ... s) when there is none

    with pytest.raises(_HTTPError):  # anything but 429/503 is not retried
        data.hub_retry("x", lambda: (_ for _ in ()).throw(_HTTPError(404)), sleep=waits.append)
    assert len(waits) == 2

    waits.clear()
    with pytest.raises(XstiltsError) as err:
        data.hub_retry("facebook/xnli@main", lambda: (_ for _ in ()).throw(_HTTPError(429, {"Retry-After": "1"})),
                       log=lambda *a: None, sleep=waits.append)
    assert waits == [1.0] * (data.HUB_TRIES - 1)
    msg = str(err.value)
    assert "\n" not in msg and "facebook/xnli@main" in msg and "429" in msg and "xstilts data prepare" in msg


_FAKE_ROWS: dict = {}


class FakeHub:
    """A Hub whose repos are all at commit `sha`; records what it was asked."""

    def __init__(self, sha=SHA_A):
        _FAKE_ROWS or _FAKE_ROWS.update(hub_fixtures.hub_rows(["xnli", "pawsx", "sst2"]))
        self.sha = sha
        self.resolved, self.loaded = [], []

    def resolve(self, source):
        self.resolved.append(source.hub_id)
        return self.sha

    def load(self, source, config, split, revision=None):
        self.loaded.append((source.hub_id, config, split, revision))
        key = f"{source.hub_id}/{config}/{split}.parquet"
        return _FAKE_ROWS.get(key) or [{"premise": "p", "hypothesis": "h", "label": 0, "idx": 0}]


def _manifest(d: Path) -> dict:
    return json.loads((d / data.SOURCES_MANIFEST).read_text())


def test_prepare_pins_every_split_and_merges_the_manifest(tmp_path):
    assert data.source_shas(tmp_path) == {}  # no manifest yet
    hub = FakeHub()
    written = data.prepare(["pawsx"], tmp_path, loader=hub.load, resolve=hub.resolve, log=lambda *a: None)
    assert len(written) == 15 and hub.resolved == ["google-research-datasets/paws-x"]  # resolved once
    assert {rev for *_, rev in hub.loaded} == {SHA_A}  # every split read at that SHA
    m = _manifest(tmp_path)
    assert m["sources"]["google-research-datasets/paws-x"] == {
        "revision": None, "sha": SHA_A,
        "configs": {l: (["test", "train", "validation"] if l == "en" else ["test", "validation"])
                    for l in sorted(("de", "en", "es", "fr", "ja", "ko", "zh"))}}
    assert m["prepared_at"].startswith("20") and not list(tmp_path.glob("*.tmp"))
    assert data.source_shas(tmp_path) == {"google-research-datasets/paws-x": SHA_A}

    # a second prepare of other tasks adds to it; the Hub moved on, but the pinned source keeps its files and SHA
    moved = FakeHub(SHA_B)
    data.prepare(["pawsx", "sst2"], tmp_path, loader=moved.load, resolve=moved.resolve, log=lambda *a: None)
    assert moved.resolved == ["nyu-mll/glue"] and {h for h, *_ in moved.loaded} == {"nyu-mll/glue"}
    assert data.source_shas(tmp_path) == {"google-research-datasets/paws-x": SHA_A, "nyu-mll/glue": SHA_B}
    assert _manifest(tmp_path)["sources"]["nyu-mll/glue"]["configs"] == {"sst2": ["train", "validation"]}

    # a later task of an already pinned source (another GLUE config) is read at the recorded SHA, not resolved
    later = FakeHub("c" * 40)
    data.prepare(["qqp"], tmp_path, loader=later.load, resolve=later.resolve, log=lambda *a: None)
    assert later.resolved == [] and {rev for *_, rev in later.loaded} == {SHA_B}
    assert _manifest(tmp_path)["sources"]["nyu-mll/glue"]["configs"] == {"qqp": ["train", "validation"],
                                                                        "sst2": ["train", "validation"]}

    # --refresh: re-resolved; the source that moved is downloaded again whole, as the manifest lists it
    refreshed = FakeHub("d" * 40)
    again = data.prepare(["sst2"], tmp_path, loader=refreshed.load, resolve=refreshed.resolve, refresh=True,
                         log=lambda *a: None)
    assert sorted((c, s) for _, c, s, _ in refreshed.loaded) == [("qqp", "train"), ("qqp", "validation"),
                                                                ("sst2", "train"), ("sst2", "validation")]
    assert len(again) == 4 and data.source_shas(tmp_path)["nyu-mll/glue"] == "d" * 40
    assert _manifest(tmp_path)["sources"]["nyu-mll/glue"]["configs"] == {"qqp": ["train", "validation"],
                                                                        "sst2": ["train", "validation"]}
    # --refresh when nothing moved: nothing downloaded again
    same = FakeHub("d" * 40)
    assert data.prepare(["sst2", "qqp"], tmp_path, loader=same.load, resolve=same.resolve, refresh=True,
                        log=lambda *a: None) == [] and same.resolved == ["nyu-mll/glue"]
    assert data.source_shas(tmp_path)["google-research-datasets/paws-x"] == SHA_A  # not asked: untouched


def test_raw_file_sources_are_recorded_without_a_sha(tmp_path):
    """Cosmos QA is raw CSV files (no Hub repo, no commit): downloaded and listed under "files", not pinned."""
    hub = FakeHub()

    def csv_rows(source, config, split, revision=None):
        assert revision is None
        return hub_fixtures.ROWS["allenai/cosmos_qa/default/train.csv"]

    data.prepare(["cosmosqa"], tmp_path, loader=csv_rows, resolve=hub.resolve, log=lambda *a: None)
    assert hub.resolved == [] and data.source_shas(tmp_path) == {}
    entry = _manifest(tmp_path)["files"]["allenai/cosmos_qa"]
    assert entry["configs"] == {"default": ["train", "validation"]} and entry["urls"]["train"].endswith("train.csv")
    assert data.load_split("cosmosqa", "train", tmp_path)["en"][0]["label"] == 0


def test_a_failed_prepare_keeps_what_it_finished_and_no_temporary_file(tmp_path):
    hub = FakeHub()

    def dies_on_fr(source, config, split, revision=None):
        if config == "fr":
            raise _HTTPError(429, {"Retry-After": "0"})
        return hub.load(source, config, split, revision)

    with pytest.raises(XstiltsError, match="pawsx: google-research-datasets/paws-x/fr split validation: .*429"):
        data.prepare(["pawsx"], tmp_path, loader=dies_on_fr, resolve=hub.resolve, log=lambda *a: None)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert not [f for f in files if "tmp" in f]
    assert "google-research-datasets/paws-x/fr/validation.parquet" not in files
    recorded = _manifest(tmp_path)["sources"]["google-research-datasets/paws-x"]["configs"]
    on_disk = {f.split("/")[2] for f in files if f.endswith(".parquet")}
    assert set(recorded) == on_disk and "fr" not in recorded  # the manifest lists exactly what was finished


def test_malformed_sources_manifest_is_a_clear_error(tmp_path):
    (tmp_path / data.SOURCES_MANIFEST).write_text("{not json")
    with pytest.raises(XstiltsError, match="malformed .*xstilts-sources.json.*--refresh"):
        data.source_shas(tmp_path)


def test_prepare_offline_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(XstiltsError, match="switched off.*HF_HUB_OFFLINE"):
        data.prepare(["sst2"], tmp_path, log=lambda *a: None)


# ---------------------------------------------------------------- the real path against the Hub stand-in (subprocesses)


def _repos() -> dict[str, dict[str, bytes]]:
    rows = hub_fixtures.hub_rows(["xnli", "pawsx"])
    # what the real repos also hold and prepare must leave alone: XNLI's per-language train sets, MNLI's other splits
    rows.update({f"facebook/xnli/{l}/train.parquet": [hub_fixtures.NLI(f"train-{l}", "h", 0)] for l in ("en", "de")})
    rows.update({f"nyu-mll/glue/mnli/{s}.parquet": [hub_fixtures.NLI(s, "h", 0, idx=0)]
                 for s in ("validation_mismatched", "test_matched", "test_mismatched")})
    return from_layout(rows)


@pytest.fixture
def hub():
    with HubStandIn(_repos()) as server:
        yield server


def _xstilts(hub: HubStandIn, tmp: Path, *args: str, offline: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf"), HF_DATASETS_CACHE=str(tmp / "hf-datasets"),
               HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(REPO_ROOT),
               HF_HUB_ETAG_TIMEOUT="60", HF_HUB_DOWNLOAD_TIMEOUT="60")  # a busy test machine is not a dead Hub
    if offline:
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "search.cli", *args], env=env, cwd=tmp, capture_output=True,
                          text=True, timeout=300)


def test_the_stand_in_answers_huggingface_hub_itself(hub, tmp_path):
    """The stand-in keeps the Hub's shapes for huggingface_hub's own calls too (info, paths-info, tree, download,
    HfFileSystem range reads, typed 404s), not only for the ones `load_dataset` happened to make."""
    code = """
import json
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download
api = HfApi()
info = api.dataset_info("facebook/xnli")
found = api.get_paths_info("facebook/xnli", ["de", "de/test-00000-of-00001.parquet", "nope"], repo_type="dataset")
tree = [f.path for f in api.list_repo_tree("facebook/xnli", "de", repo_type="dataset")]
path = hf_hub_download("facebook/xnli", "de/validation-00000-of-00001.parquet", repo_type="dataset", revision=info.sha)
with HfFileSystem().open("datasets/facebook/xnli/de/validation-00000-of-00001.parquet", "rb") as fh:
    fh.seek(1)
    head = fh.read(3)
print(json.dumps({"sha": info.sha, "siblings": len(info.siblings), "configs": len(info.card_data["configs"]),
                  "found": [type(f).__name__ for f in found], "lfs": found[1].lfs is not None, "tree": tree,
                  "download": open(path, "rb").read(4).decode(), "head": head.decode(),
                  "missing": api.file_exists("facebook/xnli", "nope", repo_type="dataset"),
                  "no_repo": api.repo_exists("x/y", repo_type="dataset")}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    assert got["sha"] == hub.sha("facebook/xnli") and got["configs"] == 15 and got["siblings"] == 2 + 30 + 2
    assert got["found"] == ["RepoFolder", "RepoFile"] and got["lfs"]  # a missing path is left out, as on the Hub
    assert got["tree"] == [f"de/{s}-00000-of-00001.parquet" for s in ("test", "train", "validation")]
    assert got["download"] == "PAR1" and got["head"] == "AR1"  # a whole file, and a Range read
    assert got["missing"] is False and got["no_repo"] is False


@pytest.mark.slow
def test_prepare_pins_rides_out_429s_and_then_runs_offline(hub, tmp_path):
    d = tmp_path / "D"
    xnli_sha, paws_sha, glue_sha = (hub.sha(r) for r in ("facebook/xnli", "google-research-datasets/paws-x",
                                                         "nyu-mll/glue"))
    # our own dataset-info call (huggingface_hub does not retry it) and a file download (huggingface_hub does)
    info = "/api/datasets/facebook/xnli/revision/main"
    download = f"/datasets/google-research-datasets/paws-x/resolve/{paws_sha}/de/validation-00000-of-00001.parquet"
    hub.fail(info)
    hub.fail(download, method="GET")

    run = _xstilts(hub, tmp_path, "data", "prepare", "xnli", "pawsx", "--data-dir", str(d))
    assert run.returncode == 0, run.stderr[-3000:]
    assert hub.requests[info] == 2  # one 429, one answer
    assert [m for m, p, _ in hub.log if p == download].count("GET") == 2
    assert "429" in run.stdout and "47 files written" in run.stdout

    # the local layout, with the Hub's columns and the stand-in's rows
    for rel, rows in hub_fixtures.hub_rows(["xnli", "pawsx"]).items():
        table = pq.read_table(d / rel)
        assert table.column_names == list(rows[0]), rel
        assert table.to_pylist() == rows, rel
    assert not (d / "facebook/xnli/de/train.parquet").exists()  # XNLI's own train set is never read
    assert not (d / "nyu-mll/glue/mnli/validation_mismatched.parquet").exists()
    assert not list(d.rglob("*.tmp"))

    # the manifest: the stand-in's SHAs, every split, and source_shas reads it
    m = _manifest(d)
    assert data.source_shas(d) == {"facebook/xnli": xnli_sha, "google-research-datasets/paws-x": paws_sha,
                                   "nyu-mll/glue": glue_sha}
    assert m["sources"]["nyu-mll/glue"] == {"revision": None, "sha": glue_sha,
                                            "configs": {"mnli": ["train", "validation_matched"]}}
    assert len(m["sources"]["facebook/xnli"]["configs"]) == 15
    assert all(len(s) == 40 and int(s, 16) >= 0 for s in data.source_shas(d).values())

    # every Hub request of the run was at a pinned SHA, except the one dataset-info call per source that pinned it
    unpinned = {p for _, p, _ in hub.log if "/resolve/" in p or "/tree/" in p or "/revision/" in p
                if not any(sha in p for sha in (xnli_sha, paws_sha, glue_sha))}
    assert unpinned == {f"/api/datasets/{r}/revision/main" for r in
                        ("facebook/xnli", "google-research-datasets/paws-x", "nyu-mll/glue")}

    # offline from D: loads, and the stand-in sees nothing more
    hub.reset_counts()
    for task, expect in (("xnli", {"train": {"en": 2}, "validation": 15, "test": 15}),
                         ("pawsx", {"train": {"en": 1}, "validation": 7, "test": 7})):
        run = _xstilts(hub, tmp_path, "data", "inspect", task, "--data-dir", str(d), "--json", offline=True)
        assert run.returncode == 0, run.stderr[-3000:]
        splits = json.loads(run.stdout)["splits"]
        assert splits["train"] == expect["train"], task
        assert len(splits["validation"]) == expect["validation"] and len(splits["test"]) == expect["test"], task
    assert hub.count() == 0, hub.log[:5]

    # a second prepare: nothing to download, the Hub is not asked
    run = _xstilts(hub, tmp_path, "data", "prepare", "xnli", "pawsx", "--data-dir", str(d))
    assert run.returncode == 0 and "0 files written" in run.stdout, run.stderr[-2000:]
    assert hub.count() == 0, hub.log[:5]


@pytest.mark.slow
def test_an_endless_429_is_one_line_and_leaves_no_half_written_file(hub, tmp_path):
    d = tmp_path / "D"
    # XNLI's 30 splits come through; MNLI's source (nyu-mll/glue) is rate-limited for good
    info = "/api/datasets/nyu-mll/glue/revision/main"
    hub.fail(info, times=10_000)
    run = _xstilts(hub, tmp_path, "data", "prepare", "xnli", "--data-dir", str(d))
    assert run.returncode == 2, (run.stdout[-2000:], run.stderr[-2000:])
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and run.stderr.rstrip().splitlines()[-1] == errors[0], run.stderr[-2000:]
    assert "nyu-mll/glue" in errors[0] and "429" in errors[0] and "Traceback" not in run.stderr
    assert "re-run the same `xstilts data prepare`" in errors[0]
    assert hub.requests[info] == data.HUB_TRIES  # bounded

    files = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith(".tmp")], files
    parquet = [f for f in files if f.endswith(".parquet")]
    assert len(parquet) == 30 and all(f.startswith("facebook/xnli/") for f in parquet), parquet
    for f in parquet:  # each one complete
        assert pq.read_table(d / f).num_rows == 2, f
    manifest = _manifest(d)["sources"]  # what finished is recorded; the source that failed is not
    assert set(manifest) == {"facebook/xnli"} and len(manifest["facebook/xnli"]["configs"]) == 15

    # the limit lifted: the same command finishes the job, XNLI untouched and not asked again
    hub.reset_counts()
    hub.clear_failures()
    run = _xstilts(hub, tmp_path, "data", "prepare", "xnli", "--data-dir", str(d))
    assert run.returncode == 0 and "2 files written" in run.stdout, run.stderr[-2000:]
    assert hub.count("/api/datasets/facebook/xnli") == 0 and hub.count("/datasets/facebook/xnli") == 0
    assert set(data.source_shas(d)) == {"facebook/xnli", "nyu-mll/glue"}


@pytest.mark.slow
def test_a_parquet_export_branch_is_pinned_to_its_own_sha(tmp_path):
    """HellaSwag's main holds a loading script datasets 5.x refuses; it is read from the viewer's parquet export
    (`refs/convert/parquet`, `<config>/<split>/0000.parquet`), pinned to that branch's SHA."""
    export = {f"default/{s}/0000.parquet": parquet_bytes(hub_fixtures.ROWS[f"Rowan/hellaswag/default/{s}.parquet"])
              for s in ("train", "validation")}
    main = {"hellaswag.py": b"# a loading script\n", "README.md": b"---\nlicense: mit\n---\n"}
    with HubStandIn({"Rowan/hellaswag": main}, {"Rowan/hellaswag": {"refs/convert/parquet": export}}) as hub:
        d = tmp_path / "D"
        run = _xstilts(hub, tmp_path, "data", "prepare", "hellaswag", "--data-dir", str(d))
        assert run.returncode == 0, run.stderr[-3000:]
        entry = _manifest(d)["sources"]["Rowan/hellaswag"]
        assert entry == {"revision": "refs/convert/parquet", "sha": hub.sha("Rowan/hellaswag", "refs/convert/parquet"),
                         "configs": {"default": ["train", "validation"]}}
        assert entry["sha"] != hub.sha("Rowan/hellaswag")
    assert pq.read_table(d / "Rowan/hellaswag/default/validation.parquet").to_pylist() == \
        hub_fixtures.ROWS["Rowan/hellaswag/default/validation.parquet"]
    assert data.load_split("hellaswag", "train", d)["en"][0]["choices"][0] == "then she bakes it."


@pytest.mark.slow
def test_cache_keys_of_hub_sources_follow_the_commit_sha(tmp_path):
    """A source read straight from the Hub (no data_dir) is keyed by the commit SHA its branch points at now, so a
    dataset changed upstream gives new cache keys instead of serving stale entries."""
    code = """
import json
from trainables.data import inputs
print(json.dumps(inputs("xnli", "validation", None)))
"""
    keys = []
    for variant in (0, 1):
        repos = _repos()
        if variant:  # the same repo, one file changed upstream: a new commit
            repos["facebook/xnli"]["README.md"] = repos["facebook/xnli"]["README.md"] + b"\n"
        with HubStandIn(repos) as hub:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
            env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO_ROOT))
            run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stderr[-3000:]
            got = json.loads(run.stdout)
            assert {k[4] for k in got if k[0] == "hub"} == {hub.sha("facebook/xnli")}
            assert hub.count("/api/datasets/facebook/xnli") == 1  # asked once per process, not per split
            keys.append(got)
    assert keys[0] != keys[1]
