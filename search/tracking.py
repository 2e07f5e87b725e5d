"""A search's trials tracked from its driver: `TrackTrials`, a Tune callback that writes each trial's MLflow run.

Trials never talk to MLflow. A trial records its tracking calls (`trainables.tracking.RecordingTracker`) and
hands them to Tune with each rung's report, under the result key `TRACKING` (search/trainable.py `report_rung`).
On the driver, `TrackTrials.on_trial_result` takes them out of the result (Tune's own loggers and `last_result`
stay small) and queues them; a sender thread writes them to the trial's run in batches (`log_batch`), so Tune's
loop never waits on the tracking server. The run is made by the driver (nested under the search's parent run,
with MLflow's context tags, `ray.trial_id`, `optuna.trial`, `xstilts.search`) and found again by its Ray trial
id after a restore; Ray's verdict closes it (FINISHED when a trial ends or ASHA stops it, FAILED on an error).

While the tracking server is down, the queue waits and the sender tries again every `RETRY_S`; the queue is part
of Tune's experiment state (`get_state`/`set_state`), so a driver that dies meanwhile loses nothing: `--resume`
sends it. At the search's end `finish` waits up to `patience_s` for the queue to empty, then closes FAILED the
runs of Optuna trials a dead driver left behind (told FAIL and run again under a new number).

Since only the driver writes, a SQLite store on the driver's disk serves a multi-node search too.

  (used by search/run.py; a unit test drives it by hand: tests/test_search_units.py)
"""

from __future__ import annotations

import copy
import logging
import threading
import time

from ray import tune

from trainables.errors import XstiltsError
from trainables.tracking import RunWriter, TrackingStore, mask

log = logging.getLogger(__name__)

TRACKING = "xstilts.tracking"  # the result key a trial's recorded tracking calls travel under


class TrackTrials(tune.Callback):
    """Each trial's MLflow run, written from the driver (see the module's docstring)."""

    RETRY_S = 5.0  # while the store is down, try again this often

    def __init__(self, uri: str, experiment: str, parent_run_id: str | None, search: str,
                 context: dict[str, str] | None = None):
        self.uri, self.experiment, self.parent_run_id, self.search = uri, experiment, parent_run_id, search
        self.context = dict(context or {})
        self.queue: dict[str, list[list]] = {}  # trial id -> operations not yet written, oldest first
        self.runs: dict[str, str] = {}  # trial id -> its MLflow run
        self.numbers: dict[str, int | None] = {}  # trial id -> its Optuna trial number
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock, self._wake = threading.Lock(), threading.Event()
        self._sending = threading.Lock()  # one send at a time (the sender thread's, or a caller's)
        self._thread: threading.Thread | None = None
        self._writer: RunWriter | None = None
        self._stopping, self.down_since, self.last_error = False, 0.0, ""

    def __getstate__(self):  # pickled into tuner.pkl: no lock, thread or client
        with self._lock:
            state = copy.deepcopy({k: v for k, v in self.__dict__.items() if not k.startswith("_")})
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_runtime()

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
        self.add(trial.trial_id, [["open"]], trial.config.get("optuna_trial"))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        ops = result.pop(TRACKING, None) or []  # (Tune allows callbacks to change the result in place)
        self.add(trial.trial_id, ops, trial.config.get("optuna_trial"))
        if trial.trial_id in self.runs:  # the searcher links its Optuna trial to the run (search/searcher.py)
            result["mlflow_run_id"] = self.runs[trial.trial_id]

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.add(trial.trial_id, [["close", "FINISHED"]])

    def on_trial_error(self, iteration, trials, trial, **info):
        self.add(trial.trial_id, [["close", "FAILED"]])

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
            return self._send()

    def _send(self) -> bool:
        with self._lock:
            trial_ids = [t for t, ops in self.queue.items() if ops]
        try:
            for trial_id in trial_ids:
                with self._lock:
                    ops = list(self.queue.get(trial_id, ()))
                if not ops:
                    continue
                self._writer = self._writer or RunWriter(self.uri)
                self._writer.send(self._run(trial_id), ops)
                with self._lock:  # written: forget them (what came meanwhile stays)
                    del self.queue[trial_id][:len(ops)]
                    if not self.queue[trial_id]:
                        del self.queue[trial_id]
        except Exception as exc:  # the store is down (or refused a write): keep the rest for later
            if not self.down_since:
                self.down_since = time.time()
                log.warning("tracking store %s: %s; trials' results wait in the driver", mask(self.uri), exc)
            self.last_error = f"{type(exc).__name__}: {mask(str(exc)).splitlines()[0] if str(exc) else ''}"
            return False
        if self.down_since:
            log.warning("tracking store %s answers again", mask(self.uri))
        self.down_since = 0.0
        return True

    def _run(self, trial_id: str) -> str:
        """The trial's run: known, found by its Ray trial id (made before a restore), else made."""
        if trial_id not in self.runs:
            tags = {"ray.trial_id": trial_id, "xstilts.search": self.search}
            run_id = self._writer.find(self.experiment, tags)
            if run_id is None:
                number = self.numbers.get(trial_id)
                run_tags = {**self.context, **tags, "optuna.trial": "" if number is None else str(number)}
                if self.parent_run_id:
                    run_tags["mlflow.parentRunId"] = self.parent_run_id
                run_id = self._writer.create(self.experiment, f"trial-{number}", run_tags)
            with self._lock:
                self.runs[trial_id] = run_id
        return self.runs[trial_id]

    # -- the search's end ------------------------------------------------------------------------------------------

    def finish(self, patience_s: float = 120.0, failed: set[int] = frozenset()) -> None:
        """Wait up to `patience_s` for every queued write; then close FAILED the runs of this search's Optuna
        trials told FAIL (`failed`: a dead driver's trials, run again as new ones) that are still RUNNING.
        Raises (one line) if the store did not come back: what is unwritten stays in Tune's experiment state."""
        deadline = time.time() + patience_s
        self._start()
        self._wake.set()
        while self.pending() and time.time() < deadline:
            time.sleep(0.2)
        self._stopping = True
        self._wake.set()
        left = self.pending()
        if left:
            raise XstiltsError(f"the tracking server {mask(self.uri)} did not come back within {patience_s:.0f} s "
                               f"({self.last_error}): {left} writes of {len(self.queue)} trials wait in the search's "
                               f"Ray experiment state", "start the tracking server, then `xstilts search ... --resume` "
                               "writes them")
        if failed:
            store = TrackingStore(self.uri)
            for run in store.running(self.experiment):
                number = run.tags.get("optuna.trial", "")
                if run.tags.get("xstilts.search") == self.search and number.isdigit() and int(number) in failed:
                    store.client.set_terminated(run.run_id, "FAILED")

    # -- the instance a restored Tuner uses ------------------------------------------------------------------------

    active: "TrackTrials | None" = None  # set when Tune sets it up: a restored Tuner runs an unpickled copy

    def setup(self, **info):
        TrackTrials.active = self
