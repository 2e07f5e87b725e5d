"""The search's scheduler: asynchronous successive halving (ASHA, Li et al. 2018) whose state is its own.

It makes the decisions Ray's `ASHAScheduler` makes with one bracket (ray/tune/schedulers/async_hyperband.py: rungs
at grace · rf^k; a trial reaching the highest rung it has not recorded is stopped if its value is below the
(1 − 1/rf) percentile of that rung's records; every trial stops at max_t) — tests/test_search_units.py checks
that it stops the same trials at the same rungs as Ray's — but written on Tune's public `FIFOScheduler`
interface, so an upgrade of Ray cannot silently break it, and with two things Ray's lacks:

- the seeded configurations (trials whose config says `seeded: True`: the baseline, known mixtures) always run
  to the last rung: reports compare everything against them;
- its records survive a driver crash. Ray Tune restores a search's trials and searcher but not its scheduler
  (ray-project/ray#30838), and an ASHA that forgot its rungs would let through trials the uninterrupted search
  stops. Each new record and stop is appended as one JSON line to `records` (`<search>/asha.json`: a result
  costs the same in a search's 1,000th trial as in its first); unpickling (what `Tuner.restore` does) reads them
  back, with the trials already stopped — one stopped just before the crash, whose stop Ray had not saved yet, is
  stopped again when it reports. The records' path is the one given at the search's start unless the driver
  restores inside `SeededASHA.records_at(path)` (a search folder moved or mounted elsewhere since).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler


class SeededASHA(FIFOScheduler):
    _restoring_at: str | None = None  # set by `records_at` while Tune unpickles the scheduler

    @classmethod
    @contextmanager
    def records_at(cls, path: str):
        """Read (and from then on write) the records at `path` for schedulers unpickled inside this block."""
        cls._restoring_at = str(path)
        try:
            yield
        finally:
            cls._restoring_at = None

    def __init__(self, time_attr: str = "training_iteration", metric: str | None = None, mode: str | None = None,
                 max_t: int = 100, grace_period: int = 1, reduction_factor: float = 4, *,
                 protect: bool = True, records: str | None = None):
        if not (max_t >= grace_period > 0 and reduction_factor > 1):
            raise ValueError(f"ASHA needs max_t >= grace_period > 0 and reduction_factor > 1, got {max_t}, "
                             f"{grace_period}, {reduction_factor}")
        super().__init__()
        self._time_attr, self._metric, self._mode = time_attr, metric, mode
        self._max_t, self._rf = max_t, reduction_factor
        n_rungs = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1)  # (as Ray counts them)
        self.milestones = [grace_period * reduction_factor ** k for k in range(n_rungs)]
        self.rungs: dict[float, dict[str, float]] = {m: {} for m in self.milestones}  # milestone -> trial -> value
        self.stopped: dict[str, float] = {}  # trial id -> the rung it was stopped at
        self._protect = protect
        self._records = records

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self._metric or self._mode not in ("min", "max"):
            raise ValueError("SeededASHA has no metric or mode: pass metric= and mode=, or set them in "
                             "tune.TuneConfig(metric=..., mode=...)")

    def _sign(self) -> float:
        return -1.0 if self._mode == "min" else 1.0

    def cutoff(self, recorded: dict[str, float]) -> float | None:
        if not recorded:
            return None
        return float(np.nanpercentile(list(recorded.values()), (1 - 1 / self._rf) * 100))

    def _record(self, trial_id: str, at: float, value: float) -> tuple[str, list[dict]]:
        """Ray's bracket: the highest milestone reached and not yet recorded; stop below its cutoff."""
        for milestone in reversed(self.milestones):
            recorded = self.rungs[milestone]
            if at < milestone or trial_id in recorded:
                continue
            cutoff = self.cutoff(recorded)
            decision = self.STOP if cutoff is not None and value < cutoff else self.CONTINUE
            recorded[trial_id] = value
            return decision, [{"m": milestone, "t": trial_id, "v": value}]
        return self.CONTINUE, []

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return self.CONTINUE
        at = result[self._time_attr]
        if trial.trial_id in self.stopped and at >= self.stopped[trial.trial_id]:
            return self.STOP  # stopped before a crash: stopped again, recording nothing the straight run did not
        lines: list[dict] = []
        if at >= self._max_t:
            decision = self.STOP  # the last rung: recorded in on_trial_complete, as Ray's does
        else:
            decision, lines = self._record(trial.trial_id, at, self._sign() * result[self._metric])
        if self._protect and trial.config.get("seeded"):
            decision = self.CONTINUE
        if decision == self.STOP and at < self._max_t:
            self.stopped[trial.trial_id] = at
            lines.append({"stop": trial.trial_id, "at": at})
        self._append(lines)
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if not result or self._time_attr not in result or self._metric not in result:
            return
        if trial.trial_id in self.stopped and result[self._time_attr] > self.stopped[trial.trial_id]:
            return  # (went on past its stop after a crash: not what the straight run recorded)
        _, lines = self._record(trial.trial_id, result[self._time_attr], self._sign() * result[self._metric])
        self._append(lines)

    def debug_string(self) -> str:
        return "ASHA: " + " | ".join(f"rung {m:g}: cutoff {self.cutoff(r)}" for m, r in self.rungs.items())

    def _append(self, lines: list[dict]) -> None:
        if self._records and lines:
            with open(self._records, "a") as f:
                f.write("".join(json.dumps(line) + "\n" for line in lines))

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if SeededASHA._restoring_at and self._records:
            self._records = SeededASHA._restoring_at
        path = Path(self._records) if self._records else None
        if path is None or not path.exists():
            return
        for recorded in self.rungs.values():
            recorded.clear()
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line the crash cut short
                continue
            if "stop" in entry:
                self.stopped[entry["stop"]] = entry["at"]
            elif entry.get("m") in self.rungs:
                self.rungs[entry["m"]][entry["t"]] = entry["v"]
