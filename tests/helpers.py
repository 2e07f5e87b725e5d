"""Helpers for tests that start servers: a free loopback port, and waiting for an HTTP health check."""

import socket
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, seconds: float = 90, any_status: bool = False) -> bool:
    """Whether `url` answers with success within `seconds`; with `any_status`, whether an HTTP server answers at
    all (a server that asks for credentials answers 401: that counts)."""
    import urllib.error

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return True
        except urllib.error.HTTPError:
            if any_status:
                return True
            time.sleep(1)
        except OSError:
            time.sleep(1)
    return False


class Postgres:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1 (initdb/postgres run as the `postgres` user, which the
    server requires), with a password for the `postgres` role. Stopped by the PID of the server process."""

    def __init__(self, password: str):
        import glob
        import shutil
        import subprocess
        import tempfile

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found or not shutil.which("runuser"):
            raise RuntimeError("PostgreSQL (Debian's postgresql package) is not installed")
        self.bin = found[-1].rsplit("/", 1)[0]
        self.root = tempfile.mkdtemp(prefix="xstilts-pg-", dir="/tmp")
        self.password, self.port = password, free_port()
        import os

        os.chmod(self.root, 0o755)
        subprocess.run(["chown", "postgres", self.root], check=True)
        pwfile = f"{self.root}/pw"
        subprocess.run(["runuser", "-u", "postgres", "--", "sh", "-c", f"echo '{password}' > {pwfile}"], check=True)
        subprocess.run(["runuser", "-u", "postgres", "--", f"{self.bin}/initdb", "-D", f"{self.root}/data", "-U",
                        "postgres", f"--pwfile={pwfile}", "--auth=scram-sha-256"], check=True, capture_output=True)
        self.proc = subprocess.Popen(["runuser", "-u", "postgres", "--", f"{self.bin}/postgres", "-D",
                                      f"{self.root}/data", "-h", "127.0.0.1", "-p", str(self.port), "-k", self.root],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while subprocess.run([f"{self.bin}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if time.time() > deadline:
                raise RuntimeError("PostgreSQL did not start")
            time.sleep(0.5)

    def url(self, db: str, password: bool = True) -> str:
        auth = f"postgres:{self.password}" if password else "postgres"
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{db}"

    def create(self, db: str) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {db}")

    def stop(self) -> None:
        import signal
        import shutil

        # runuser's child is the server; signalling runuser is not forwarded, so stop the server by its PID file
        try:
            pid = int(open(f"{self.root}/data/postmaster.pid").readline())
            os_kill(pid, signal.SIGINT)  # fast shutdown
        except (OSError, ValueError):
            pass
        self.proc.wait(timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def os_kill(pid: int, sig: int) -> None:
    import os

    os.kill(pid, sig)


def trials_accounted(study, n: int) -> list:
    """A search's Optuna trials after a crash and `--resume`: `n` finished (COMPLETE or PRUNED) besides the
    zombies a killed driver left (told FAIL), each of which ran again with its parameters as a new trial
    (user attribute `retry_of`). Returns the finished trials."""
    failed = {t.number: t for t in study.trials if t.state.name == "FAIL"}
    retries = {t.user_attrs["retry_of"]: t for t in study.trials if "retry_of" in t.user_attrs}
    assert set(failed) == set(retries), (sorted(failed), sorted(retries))
    assert all(retries[k].params == t.params for k, t in failed.items())
    done = [t for t in study.trials if t.number not in failed]
    assert len(done) == n and all(t.state.name in ("COMPLETE", "PRUNED") for t in done), [t.state for t in done]
    return done
