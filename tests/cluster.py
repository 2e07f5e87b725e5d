"""A two-node Ray cluster on this machine that wears a real cluster's shape, for the rehearsal tests.

- the head node has no CPUs for tasks, so every trial runs on the other node;
- the other node starts with a clean environment (`env -i` with PATH and HOME only) in its own working
  directory: nothing of the driver's shell reaches it unless Ray forwards it;
- optionally, the other node sees another file system at a given path (a tmpfs mounted over it in its own
  mount namespace, `unshare --mount`): a node that does not share the driver's storage.

Both nodes run `ray start --block` in their own process groups, which `stop()` ends (never `ray stop`, which
would stop every Ray on the machine).

    with TwoNodes(tmp_path, private=[storage]) as cluster:
        subprocess.run([... "--address", cluster.address ...])
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_unshare() -> bool:
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


class TwoNodes:
    def __init__(self, tmp: Path, cpus: int = 2, private: list[Path] = ()):
        self.tmp, self.cpus, self.private = Path(tmp), cpus, [Path(p) for p in private]
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        import secrets

        # Token authentication, as new Ray clusters have it: every node and client gets the cluster's token
        # explicitly (an earlier ray.init in the test process may have set RAY_AUTH_MODE=token for a token file
        # under another HOME); `env` is what a client of this cluster needs.
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.clean_wd = self.tmp / "clean-node" / "wd"
        self.clean_home = self.tmp / "clean-node" / "home"

    def __enter__(self) -> "TwoNodes":
        for d in (self.clean_wd, self.clean_home, self.tmp / "head-home"):
            d.mkdir(parents=True, exist_ok=True)
        import tempfile

        self.ray_tmp = Path(tempfile.mkdtemp(prefix="xr-", dir="/tmp"))  # short: Unix socket paths <= 107 bytes
        ray = str(BIN / "ray")
        common = ["--object-store-memory=100000000", "--block", "--disable-usage-stats"]
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "HOME": str(self.tmp / "head-home"),
               **self.env}
        self._start([ray, "start", "--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false",
                     f"--temp-dir={self.ray_tmp}", *common], env, self.tmp / "head.log", cwd=self.tmp)
        self._wait(lambda: _accepts(self.port), "the head node", 90)
        clean = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(self.clean_home), **self.env}
        node = [ray, "start", f"--address={self.address}", f"--num-cpus={self.cpus}", *common]
        if self.private:
            mounts = " && ".join(f"mkdir -p {p} && mount -t tmpfs none {p}" for p in self.private)
            node = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    f"{mounts} && exec {' '.join(node)}"]
        for attempt in range(3):  # Ray gives a raylet 30 s to register: on a loaded 2-core machine, start again
            self._start(["env", "-i", *(f"{k}={v}" for k, v in clean.items()), *node], None,
                        self.tmp / f"node-{attempt}.log", cwd=self.clean_wd)
            try:
                self._wait(self._two_alive, "the clean node to join", 120, stop=attempt == 2)
                return self
            except NodeExited:
                node_proc = self.procs.pop()
                _kill_group(node_proc)
        return self

    def _start(self, cmd, env, log: Path, cwd: Path) -> None:
        self.procs.append(subprocess.Popen(cmd, env=env, cwd=cwd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def _wait(self, ready, what: str, seconds: float, stop: bool = True) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            if any(p.poll() is not None for p in self.procs):
                if stop or self.procs[0].poll() is not None:
                    self.stop()
                    raise RuntimeError(f"a Ray node exited while waiting for {what}: see {self.tmp}/*.log")
                raise NodeExited(what)
            if ready():
                return
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"timed out waiting for {what}")

    def _two_alive(self) -> bool:
        code = ("import ray; ray.init(address=%r, log_to_driver=False); "
                "print(sum(n['Alive'] for n in ray.nodes()))" % self.address)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env=self.client_env())
        return out.stdout.strip().endswith("2")

    def client_env(self, base: dict | None = None) -> dict:
        """`base` (default: this process's environment) as a client of this cluster: its token, no other Ray
        settings (RAY_ADDRESS of another Ray, say)."""
        base = dict(os.environ if base is None else base)
        return {**{k: v for k, v in base.items() if not k.startswith("RAY_")}, **self.env}

    def stop(self) -> None:
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 15
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:  # whatever ignored SIGTERM
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs = []
        if getattr(self, "ray_tmp", None):
            shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        self.stop()


class NodeExited(RuntimeError):
    pass


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
