"""A search's trials tracked from its driver: `TrackTrials`, a Tune callback that writes each trial's MLflow run.

Trials never talk to MLflow. A trial records its tracking calls (`trainables.tracking.RecordingTracker`) and
puts them in the checkpoint of each rung's report, as the file `TRACKING` (search/trainable.py `report_rung`):
Tune keeps every checkpoint, so it keeps them, and they stay out of the reported metrics, which Tune copies into
its experiment state for every checkpoint. On the driver, `TrackTrials.on_checkpoint` reads them when Tune
registers the checkpoint and queues them; a sender thread writes them to the trial's run in batches
(`log_batch`), so Tune's loop never waits on the tracking server. The run is made by the driver when the trial
starts (nested under the search's parent run, with MLflow's context tags, `ray.trial_id`, `optuna.trial`,
`xstilts.search`), found again by its Ray trial id after a restore, and closed with Ray's verdict (FINISHED when
a trial ends or ASHA stops it, FAILED on an error), with the times these happened, not the times they were sent.

While the tracking server is down, the queue waits and the sender tries again (MLflow's own retries with their
backoff, then every `RETRY_S`); the queue is part of Tune's experiment state (`get_state`/`set_state`), so a
driver that dies meanwhile loses nothing: `--resume` sends it. A write the store refuses for good (a run deleted
in the UI, a changed parameter) is dropped with a warning, so it cannot hold up the rest. At the search's end
`finish` waits for the queue to empty, then closes FAILED the runs of Optuna trials a dead driver left behind
(told FAIL and run again under a new number).

Since only the driver writes, a SQLite store on the driver's disk serves a multi-node search too.

  (used by search/run.py; tests/test_search_units.py drives it by hand, tests/test_faults.py on a cluster)
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time

from ray import tune

from trainables.errors import XstiltsError
from trainables.tracking import RunWriter, TrackingStore, mask

log = logging.getLogger(__name__)

TRACKING = "tracking.json"  # in a rung's checkpoint: the trial's recorded tracking calls since its last report
REFUSED = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "BAD_REQUEST",
           "RESOURCE_ALREADY_EXISTS"}  # MLflow error codes of a write that will never succeed


def _refused(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) in REFUSED


def _now_ms() -> int:
    return int(time.time() * 1000)


def run_of(trial_id: str) -> str | None:
    """The MLflow run of a Ray trial of the search running in this process, once the driver has made it."""
    active = TrackTrials.active
    return active.runs.get(trial_id) if active else None


class TrackTrials(tune.Callback):
    """Each trial's MLflow run, written from the driver (see the module's docstring)."""

    RETRY_S = 5.0  # while the store is down, try again this often
    active: "TrackTrials | None" = None  # the instance Tune set up: a restored Tuner runs an unpickled copy
    driver: "TrackTrials | None" = None  # the one this driver made: its store, parent run and context hold (`setup`)

    def __init__(self, uri: str, experiment: str, parent_run_id: str | None, search: str,
                 context: dict[str, str] | None = None):
        self.uri, self.experiment, self.parent_run_id, self.search = uri, experiment, parent_run_id, search
        self.context = dict(context or {})
        self.queue: dict[str, list[list]] = {}  # trial id -> operations not yet written, oldest first
        self.runs: dict[str, str] = {}  # trial id -> its MLflow run
        self.numbers: dict[str, int | None] = {}  # trial id -> its Optuna trial number
        self.dropped: dict[str, str] = {}  # trial id -> the last write the store refused for good
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock, self._wake = threading.Lock(), threading.Event()
        self._sending = threading.Lock()  # one send at a time (the sender thread's, or a caller's)
        self._thread: threading.Thread | None = None
        self._writer: RunWriter | None = None
        self._stopping, self._in_flight = False, False
        self.down_since, self.last_error = 0.0, ""

    def __getstate__(self):  # pickled into tuner.pkl: no lock, thread or client
        with self._lock:
            return copy.deepcopy({k: v for k, v in self.__dict__.items() if not k.startswith("_")})

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_runtime()

    def setup(self, **info):
        """Tune sets callbacks up after restoring their state: a restored copy takes this driver's settings (the
        store may have moved); runs made in another store are forgotten (found again, or made, in this one)."""
        TrackTrials.active = self
        now = TrackTrials.driver
        if now is not None and now is not self:
            if now.uri != self.uri:
                self.runs.clear()
                self._writer = None
            self.uri, self.parent_run_id = now.uri, now.parent_run_id
            self.context = dict(now.context or self.context)

    # -- Tune saves this with its experiment, and restores it after a crash ------------------------------------------

    def get_state(self) -> dict:
        with self._lock:
            return copy.deepcopy({"queue": self.queue, "runs": self.runs, "numbers": self.numbers})

    def set_state(self, state: dict) -> None:
        with self._lock:
            for trial_id, ops in state.get("queue", {}).items():  # (before anything this driver queued)
                self.queue[trial_id] = ops + self.queue.get(trial_id, [])
            self.runs.update(state.get("runs", {}))
            self.numbers.update(state.get("numbers", {}))

    # -- events ------------------------------------------------------------------------------------------------------

    def add(self, trial_id: str, ops: list[list], number: int | None = None) -> None:
        """Queue operations for a trial's run (also from outside Tune's loop: the finalists' test scores)."""
        with self._lock:
            if number is not None:
                self.numbers[trial_id] = number
            self.queue.setdefault(trial_id, []).extend(ops)
        self._start()
        self._wake.set()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.add(trial.trial_id, [["open", _now_ms()]], trial.config.get("optuna_trial"))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        try:
            with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{TRACKING}") as f:
                ops = json.loads(f.readall())
        except FileNotFoundError:  # (a rung with nothing new to log)
            return
        except (OSError, ValueError) as exc:
            log.warning("trial %s: its tracking calls in %s are unreadable (%s)", trial.trial_id, checkpoint.path, exc)
            return
        self.add(trial.trial_id, ops, trial.config.get("optuna_trial"))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.add(trial.trial_id, [["close", "FINISHED", _now_ms()]])

    def on_trial_error(self, iteration, trials, trial, **info):
        self.add(trial.trial_id, [["close", "FAILED", _now_ms()]])

    # -- the sender ----------------------------------------------------------------------------------------------------

    def _start(self) -> None:
        self._stopping = False  # (a thread told to stop but not yet gone carries on)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="xstilts-track-trials", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.wait(timeout=self.RETRY_S if self.down_since else None)
            self._wake.clear()
            self.send()

    def pending(self) -> int:
        with self._lock:
            return sum(len(ops) for ops in self.queue.values())

    def send(self) -> bool:
        """Write what is queued, trial by trial; False (the rest kept) if the store did not answer."""
        with self._sending:
            self._in_flight = True
            try:
                return self._send()
            finally:
                self._in_flight = False

    def _send(self) -> bool:
        with self._lock:
            trial_ids = [t for t, ops in self.queue.items() if ops]
        try:
            self._writer = self._writer or RunWriter(self.uri)
            for trial_id in trial_ids:
                with self._lock:
                    ops = list(self.queue.get(trial_id, ()))
                if ops:
                    self._send_trial(trial_id, ops)
                    with self._lock:  # written: forget them (what came meanwhile stays)
                        del self.queue[trial_id][:len(ops)]
                        if not self.queue[trial_id]:
                            del self.queue[trial_id]
        except Exception as exc:  # the store is down: keep the rest, in order, for later
            if not self.down_since:
                self.down_since = time.time()
                log.warning("tracking store %s: %s; trials' results wait in the driver", mask(self.uri), exc)
            self.last_error = f"{type(exc).__name__}: {mask(str(exc)).splitlines()[0] if str(exc) else ''}"
            return False
        if self.down_since:
            log.warning("tracking store %s answers again", mask(self.uri))
        self.down_since = 0.0
        return True

    def _send_trial(self, trial_id: str, ops: list[list]) -> None:
        """One trial's operations, in batches; if the store refuses the batch for good, one at a time, dropping
        (with a warning) only what it refuses. Raises if the store does not answer."""
        run_id = self._run(trial_id, ops)
        if run_id is None:  # only a close, of a trial that never started (stopped while pending): no run
            return
        try:
            self._writer.send(run_id, ops)
            return
        except Exception as exc:
            if not _refused(exc):
                raise
        for op in ops:
            try:
                self._writer.send(run_id, [op])
            except Exception as exc:
                if not _refused(exc):
                    raise
                self.dropped[trial_id] = f"{op[0]}: {mask(str(exc)).splitlines()[0][:200]}"
                log.warning("trial %s: the tracking store refused a write (%s), dropped", trial_id,
                            self.dropped[trial_id])

    def _run(self, trial_id: str, ops: list[list]) -> str | None:
        """The trial's run: known, found by its Ray trial id (made before a restore), else made (started when the
        trial started, if that is among `ops`); None for a trial with only a close to write and no run."""
        if trial_id not in self.runs:
            tags = {"ray.trial_id": trial_id, "xstilts.search": self.search}
            run_id = self._writer.find(self.experiment, tags)
            if run_id is None:
                if all(op[0] == "close" for op in ops):
                    return None
                number = self.numbers.get(trial_id)
                run_tags = {**self.context, **tags, "optuna.trial": "" if number is None else str(number)}
                if self.parent_run_id:
                    run_tags["mlflow.parentRunId"] = self.parent_run_id
                start = next((op[1] for op in ops if op[0] == "open" and len(op) > 1), None)
                run_id = self._writer.create(self.experiment, f"trial-{number}", run_tags, start)
            with self._lock:
                self.runs[trial_id] = run_id
        return self.runs[trial_id]

    # -- the search's end ------------------------------------------------------------------------------------------

    def finish(self, patience_s: float = 120.0, failed: set[int] = frozenset()) -> None:
        """Wait up to `patience_s` for every queued write (longer while a write is still in MLflow's own retries,
        up to 5 minutes in all); then close FAILED the runs of this search's Optuna trials told FAIL (`failed`: a
        dead driver's trials, run again as new ones) that are still RUNNING. Raises (one line) if the store did
        not come back: what the trials logged waits in Tune's experiment state for `--resume`."""
        started = time.time()
        self._start()
        self._wake.set()
        while self.pending() and (time.time() - started < patience_s
                                  or (self._in_flight and time.time() - started < max(patience_s, 300))):
            time.sleep(0.2)
        self._stopping = True
        self._wake.set()
        left = self.pending()
        if left:
            raise XstiltsError(f"the tracking server {mask(self.uri)} did not come back within "
                               f"{time.time() - started:.0f} s ({self.last_error}): {left} writes of "
                               f"{len(self.queue)} trials wait in the search's Ray experiment state",
                               "start the tracking server, then `xstilts search ... --resume` writes them (and "
                               "computes the finalists' test scores again, from the cache)")
        if self.dropped:
            log.warning("the tracking store refused writes of %d trials for good (e.g. %s)", len(self.dropped),
                        next(iter(self.dropped.values())))
        if failed:
            try:
                store = TrackingStore(self.uri)
                for run in store.running(self.experiment):
                    number = run.tags.get("optuna.trial", "")
                    if run.tags.get("xstilts.search") == self.search and number.isdigit() and int(number) in failed:
                        store.client.set_terminated(run.run_id, "FAILED")
            except Exception as exc:
                raise XstiltsError(f"the tracking server {mask(self.uri)} failed while the runs of trials a dead "
                                   f"driver left were closed ({type(exc).__name__})",
                                   "start it again, then `xstilts search ... --resume` closes them") from None
