"""What every node of a search shares with its driver, set up and checked before the first trial.

A Ray node runs trials in its own environment and with its own disks: nothing of the driver's shell reaches it
unless forwarded, and a path that exists on the driver may be another (or no) folder there.

  forwarded_env(extra)          the variables every trial gets through Ray's runtime_env: the driver's HF_*,
                                XSTILTS_* and the search's `env: [...]` names that are set (less those a
                                submitted job's own runtime_env already sets: Ray refuses a clash); not
                                MLFLOW_TRACKING_*: only the driver talks to MLflow (search/tracking.py), so
                                the tracking server's credentials stay with it
  search_data(cfg, base, log)   the Hub is read once, by the driver: every source the search's tasks need that
                                is not under data_dir (default `<storage>/data`) is prepared there, pinned to its
                                commit SHA (`xstilts data prepare`); trials then run with HF_HUB_OFFLINE=1
  check_nodes(paths, names)     one task pinned to each live node writes and reads a nonce under each path
                                (storage, cache, data) and reports which forwarded names it sees; a node that
                                sees another file system, cannot write, or lacks a variable stops the search
                                with one line naming the node and the path

Values of forwarded variables are never printed or written by xstilts (names only). Note that Ray's dashboard
shows a job's runtime_env to whoever can reach it: keep the dashboard on a trusted network (`ray start` binds it
to 127.0.0.1 by default).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from trainables.errors import XstiltsError

FORWARDED = ("HF_", "XSTILTS_")  # prefixes forwarded to every trial
NOT_FORWARDED = {"XSTILTS_HOME"}  # the driver's folder: trials get absolute paths instead
CHECK = ".xstilts-nodecheck"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # trials never read the Hub: the driver prepared it


def _job_env_names() -> set[str]:
    """Names a submitted job's runtime_env already sets (`ray job submit --runtime-env-json`): Ray refuses a
    driver runtime_env that sets them again, and the job's own values reach every worker anyway."""
    try:
        config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "") or "{}")
        return set((config.get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, AttributeError):
        return set()


def forwarded_names(extra: list[str] = (), environ: dict | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    return sorted(k for k in environ if (k.startswith(FORWARDED) and k not in NOT_FORWARDED) or k in set(extra))


def forwarded_env(extra: list[str] = (), environ: dict | None = None) -> dict[str, str]:
    """The driver's variables every trial gets (module docstring)."""
    environ = os.environ if environ is None else environ
    skip = _job_env_names()
    return {k: environ[k] for k in forwarded_names(extra, environ) if k not in skip}


def _listing(folder: Path) -> list[str]:
    """What a read-only folder holds, two levels deep (names only)."""
    try:
        return sorted(str(p.relative_to(folder)) for p in folder.glob("*")) + sorted(
            str(p.relative_to(folder)) for p in folder.glob("*/*"))
    except OSError:
        return []


def search_tasks(cfg, base) -> list[str]:
    """Every task a search's trials read: its targets (their training tasks follow) and its candidate intermediate
    tasks (a trial's mixture replaces the preset's)."""
    return sorted(set(base.targets) | set(cfg.candidates))


def missing_sources(tasks: list[str], data_dir: Path | None) -> list[str]:
    """The tasks with a Hub source that is not under data_dir (what trials would otherwise fetch themselves)."""
    from trainables import data as D
    from trainables.tasks import get_task, training_task

    out = []
    for name in tasks:
        task = get_task(name)
        for t in (task, training_task(task)):
            if any(i[0] == "hub" for split in D.SPLITS for i in _inputs(D, t, split, data_dir)):
                out.append(name)
                break
    return out


def _inputs(D, task, split: str, data_dir):
    try:
        return D.inputs(task, split, data_dir, pin=False)
    except XstiltsError:
        return []


def search_data(cfg, base, log=print):
    """The search's pipeline config with every Hub source its tasks need under a shared data_dir, prepared once
    here (module docstring). Returns (config, tasks prepared now)."""
    from trainables.config import update
    from trainables.data import offline, prepare

    data_dir = Path(base.data_dir) if base.data_dir else Path(cfg.storage).resolve() / "data"
    missing = missing_sources(search_tasks(cfg, base), data_dir)
    if missing:
        if offline():
            raise XstiltsError(f"the search needs {', '.join(missing)} from the Hub, but HF_HUB_OFFLINE/"
                               f"HF_DATASETS_OFFLINE is set and {data_dir} lacks them",
                               f"run `xstilts data prepare {' '.join(missing)} --data-dir {data_dir}` where the Hub "
                               f"is reachable, or unset the offline variables for the driver")
        log(f"preparing {', '.join(missing)} from the Hub into {data_dir} (once, for every trial)")
        prepare(missing, data_dir, log=log)
    return update(base, {"data_dir": str(data_dir)}, "search config"), missing


def _probe(paths: dict[str, str], nonce: str, names: list[str], listings: dict | None = None) -> dict:
    """Run on one node: read the driver's nonce under each path, write this node's own; compare read-only
    folders' listings; which forwarded names it sees."""
    import socket

    out = {"host": socket.gethostname(), "paths": {}, "missing_env": [n for n in names if n not in os.environ]}
    for what, (path, listing) in (listings or {}).items():
        out["paths"][what] = "ok-read-only" if listing and _listing(Path(path)) == listing else \
            "it holds other files than the driver sees there (or none)"
    for what, path in paths.items():
        folder = Path(path)
        try:
            seen = (folder / f"{CHECK}-{nonce}").read_text()
        except OSError as exc:
            out["paths"][what] = f"cannot read the driver's check file there ({exc.strerror or type(exc).__name__})"
            continue
        if seen != nonce:
            out["paths"][what] = "it holds another check file than the driver wrote"
            continue
        try:
            (folder / f"{CHECK}-{nonce}-{out['host']}-{os.getpid()}").write_text(nonce)
            out["paths"][what] = "ok"
        except OSError as exc:
            out["paths"][what] = f"cannot write there ({exc.strerror or type(exc).__name__})"
    return out


def check_nodes(paths: dict[str, str | Path], names: list[str], timeout_s: float = 120.0) -> int:
    """Every live Ray node sees `paths` ({what: folder}) as the same, writable file system as the driver, and has
    the forwarded variables `names`. Returns the number of nodes checked; raises XstiltsError naming the first
    node and path that fail. Check files are removed afterwards."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nonce = secrets.token_hex(8)
    folders, listings = {}, {}
    for what, folder in ((w, Path(p)) for w, p in paths.items() if p):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{CHECK}-{nonce}").write_text(nonce)
            folders[what] = folder
        except OSError:  # read-only for the driver too (a data mount): compare what the folder holds instead
            listings[what] = (str(folder), _listing(folder))
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    try:
        refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            {k: str(v) for k, v in folders.items()}, nonce, list(names), listings): n for n in nodes}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        if pending:
            node = refs[pending[0]]
            raise XstiltsError(f"node {node.get('NodeManagerAddress')} did not answer the storage check within "
                               f"{timeout_s:.0f} s", "check that the node is healthy (`ray status`), then start again")
        for ref in ready:
            node, got = refs[ref], ray.get(ref)
            where = f"node {node.get('NodeManagerAddress')} ({got['host']})"
            for what, verdict in got["paths"].items():
                if verdict == "ok-read-only":
                    continue
                if verdict != "ok":
                    shown = folders[what] if what in folders else listings[what][0]
                    raise XstiltsError(f"{where} does not see the search's {what} {shown} as the driver does: "
                                       f"{verdict}", "put storage, cache_dir and data_dir on a file system every node "
                                       "mounts at the same path (or set them to such paths)")
                if not list(folders[what].glob(f"{CHECK}-{nonce}-{got['host']}-*")):
                    raise XstiltsError(f"{where} wrote its check file under {what} {folders[what]}, but the driver "
                                       f"does not see it there (a node-local folder of the same name?)",
                                       "put storage, cache_dir and data_dir on a file system every node mounts at "
                                       "the same path")
            if got["missing_env"]:
                raise XstiltsError(f"{where} does not have {', '.join(got['missing_env'])} although the driver "
                                   f"forwards it", "a submitted job's runtime_env may override it: set it there, "
                                   "or unset it in the job's runtime_env")
    finally:
        for folder in folders.values():
            for f in folder.glob(f"{CHECK}-{nonce}*"):
                f.unlink(missing_ok=True)
    return len(nodes)
