"""The search's Tune searcher: an Optuna study driven through public APIs only (Ray's `Searcher` interface;
Optuna's `ask`, `tell`, `enqueue_trial` and its storage's documented methods), so that an upgrade of either
cannot silently break it.

What it does beyond asking and telling:
- trials a scheduler stopped before the last rung reach Optuna as PRUNED, with every rung they reported as an
  intermediate value (Tune hands the last result to `on_trial_complete` only);
- the seeded points (`points_to_evaluate`: the baseline, known mixtures) are asked first, in order, with the user
  attribute `seeded`; their trials' configs carry `seeded: True` (ASHA never stops them);
- each Optuna trial carries its Ray trial id and MLflow run id as user attributes (optuna-dashboard shows them);
- a trial Tune gave up on (out of retries) stays RUNNING, for `xstilts search --resume` to finish;
- a zombie — an Optuna trial a crashed driver left RUNNING with no Ray trial to resume it — is told FAIL and
  enqueued again with the same parameters (user attribute `retry_of`), so the study's history shows the crash;
  the retry is asked next, before any seeded point not yet asked, so the resumed search keeps the order;
- a trial rerun after a restore from an older experiment snapshot, whose Optuna trial had already finished,
  changes nothing; a restored Ray trial the searcher's own (older) state does not know is taken up by the Optuna
  trial its config names, while that is still RUNNING (Tune saves its experiment, then the searcher; a crash
  between the two) — unless the searcher had already told it FAIL as a zombie, when its retry runs instead;
- restored inside `StudySearcher.study_at(url)`, it opens the study where the search folder is now.

Unit tests: tests/test_search_units.py.
"""

from __future__ import annotations

import logging
import pickle
from contextlib import contextmanager
from typing import Callable

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search.tracking import run_of

log = logging.getLogger(__name__)

SEEDED, RETRY_OF = "seeded", "retry_of"  # Optuna user attributes
LINKS = ("ray_trial_id", "mlflow_run_id")


class Study:
    """An Optuna study by storage URL and name, with what a Tune searcher needs besides `ask`/`tell`: reporting
    an intermediate value and setting a user attribute by trial number (through the storage's public methods,
    so a trial asked by an earlier driver can be reported on too)."""

    def __init__(self, url: str, name: str, sampler: optuna.samplers.BaseSampler | None = None,
                 directions: list[str] | None = None):
        self.storage = optuna.storages.RDBStorage(url) if isinstance(url, str) else url
        self.name = name
        if directions is None:
            self.study = optuna.load_study(study_name=name, storage=self.storage, sampler=sampler)
        else:
            self.study = optuna.create_study(storage=self.storage, study_name=name, sampler=sampler,
                                             pruner=optuna.pruners.NopPruner(), directions=directions,
                                             load_if_exists=True)
        self._id = self.storage.get_study_id_from_name(name)

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self._id, number)

    def frozen(self, number: int) -> optuna.trial.FrozenTrial:
        return self.storage.get_trial(self._trial_id(number))

    def report(self, number: int, step: int, value: float) -> None:
        """Record an intermediate value unless the step has one; raises UpdateFinishedTrialError if finished."""
        frozen = self.frozen(number)
        if frozen.state.is_finished():
            raise optuna.exceptions.UpdateFinishedTrialError(f"trial {number} has finished")
        if int(step) not in frozen.intermediate_values:
            self.storage.set_trial_intermediate_value(self._trial_id(number), int(step), float(value))

    def set_attr(self, number: int, key: str, value) -> None:
        self.storage.set_trial_user_attr(self._trial_id(number), key, value)


class StudySearcher(Searcher):
    """Tune's searcher over an Optuna study (module docstring). `space(trial) -> dict` is define-by-run: it
    suggests on the Optuna trial and returns constants for the config (here the trial's number)."""

    _restoring_at: str | None = None  # set by `study_at` while Tune unpickles the searcher

    @classmethod
    @contextmanager
    def study_at(cls, url: str):
        """Open the study at `url` for searchers unpickled inside this block (a search folder moved since)."""
        cls._restoring_at = str(url)
        try:
            yield
        finally:
            cls._restoring_at = None

    def __init__(self, space: Callable[[optuna.Trial], dict | None], metric: str | list[str],
                 mode: str | list[str], *, max_t: int, storage: str, study_name: str,
                 sampler: optuna.samplers.BaseSampler | None = None, points_to_evaluate: list[dict] | None = None):
        super().__init__(metric=metric, mode=mode)
        self._space, self._max_t, self._url, self._name = space, max_t, storage, study_name
        self._sampler = sampler  # pickled with the searcher: its random state goes on after a restore
        self._points = list(points_to_evaluate or [])
        self._numbers: dict[str, int] = {}  # Ray trial id -> Optuna trial number
        self._done: set[str] = set()  # Ray trials whose Optuna trial this searcher has finished
        self._linked: dict[str, str | None] = {}  # Ray trial id -> the MLflow run id told (None: not yet)
        self._open: Study | None = None  # not pickled: opened again after a restore
        self._checked = False  # zombies looked for (at the first use after a start or a restore, not before
        # restore() has said which trials Tune resumes)
        self._next_point = self._waiting = 0  # the next seeded point to enqueue; enqueued trials not yet asked
        self._connect()  # the study exists (its metric names can be set) once the searcher does

    # -- the study -------------------------------------------------------------------------------------------------

    def _connect(self) -> Study:
        if self._open is None:
            modes = self.mode if isinstance(self.mode, list) else [self.mode]
            self._open = Study(self._url, self._name, self._sampler,
                               directions=["minimize" if m == "min" else "maximize" for m in modes])
        return self._open

    @property
    def study(self) -> Study:
        """The study; at the first use after a start or a restore, also where the seeded points stand (read from
        the study, not from this searcher's saved state, which may be older) and the zombies retried."""
        study = self._connect()
        if not self._checked:
            self._checked = True
            trials = study.study.get_trials(deepcopy=False)
            self._next_point = sum(1 for t in trials if t.user_attrs.get(SEEDED) and RETRY_OF not in t.user_attrs)
            self._waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
            self._retry_zombies()
        return study

    def _retry_zombies(self) -> None:
        """Optuna trials left RUNNING by a crashed driver that no Ray trial of this search will resume (they
        predate this driver: its own trials are known): FAIL, and the same parameters enqueued again."""
        known = set(self._numbers.values())
        study = self._open.study
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number in known:
                continue
            study.tell(frozen.number, state=TrialState.FAIL)
            attrs = {RETRY_OF: frozen.number, **({SEEDED: True} if frozen.user_attrs.get(SEEDED) else {})}
            study.enqueue_trial(dict(frozen.params), user_attrs=attrs)
            self._waiting += 1
            log.warning("Optuna trial %d was left RUNNING by a crashed driver: told FAIL, its parameters enqueued "
                        "again", frozen.number)

    # -- Tune's Searcher interface ---------------------------------------------------------------------------------

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric, mode and the space are the searcher's own

    def suggest(self, trial_id: str) -> dict | None:
        study = self.study
        if trial_id in self._numbers:  # asked before (Tune may ask again for the same id)
            frozen = study.frozen(self._numbers[trial_id])
            return self._config(frozen.params, frozen.number, frozen.user_attrs)
        if not self._waiting and self._next_point < len(self._points):
            # The seeded points are enqueued one at a time, when their turn comes, so that a zombie's retry (also
            # enqueued, and Optuna asks enqueued trials oldest first) runs next, not after the points left: a
            # resumed search runs its configurations in the order the uninterrupted one does.
            study.study.enqueue_trial(self._points[self._next_point], user_attrs={SEEDED: True})
            self._next_point, self._waiting = self._next_point + 1, 1
        trial = study.study.ask()
        self._waiting = max(0, self._waiting - 1)
        returned = self._space(trial) or {}
        self._numbers[trial_id] = trial.number
        return {**self._config(trial.params, trial.number, trial.user_attrs), **returned}

    @staticmethod
    def _config(params: dict, number: int, attrs: dict) -> dict:
        return {**params, "optuna_trial": number, **({SEEDED: True} if attrs.get(SEEDED) else {})}

    def _known(self, trial_id: str, result: dict | None) -> bool:
        """Whether the trial's results go to Optuna. A Ray trial unknown to this searcher but restored by Tune (it
        saved its experiment, then crashed before saving the searcher) is taken up by the Optuna trial its config
        names, if that is still RUNNING."""
        if trial_id in self._done:
            return False
        if trial_id in self._numbers:
            return True
        number = ((result or {}).get("config") or {}).get("optuna_trial")
        if number is None or number in self._numbers.values():
            return False
        if self._connect().frozen(int(number)).state != TrialState.RUNNING:  # (told FAIL already if the searcher
            return False                                                   # looked for zombies first: its retry runs)
        self._numbers[trial_id] = int(number)
        return True

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not self._known(trial_id, result):
            return
        self._link(trial_id, result)
        if not isinstance(self.metric, list):  # Optuna keeps no intermediate values per objective
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not self._known(trial_id, result):
            return
        if error:  # out of retries: RUNNING, so that `--resume` (which reruns errored trials) finishes it
            self._link(trial_id, {})
            return
        number = self._numbers[trial_id]
        if result:
            self._link(trial_id, result)
            if not isinstance(self.metric, list):
                self._report(trial_id, result)  # the last rung: Tune gives it to on_trial_complete only
        values = self._values(result)
        stopped = result is not None and result.get("training_iteration", self._max_t) < self._max_t
        try:
            if stopped or values is None:
                self.study.study.tell(number, None, state=TrialState.PRUNED, skip_if_finished=True)
            else:
                self.study.study.tell(number, values, skip_if_finished=True)
        except (ValueError, RuntimeError) as exc:  # e.g. a NaN objective: Optuna refuses it
            log.warning("Optuna trial %d: %s", number, exc)
        self._done.add(trial_id)

    def _values(self, result: dict | None) -> float | list[float] | None:
        if not result:
            return None
        if isinstance(self.metric, list):
            values = [result.get(m) for m in self.metric]
            return None if any(v is None for v in values) else [float(v) for v in values]
        value = result.get(self.metric)
        return None if value is None else float(value)

    def _report(self, trial_id: str, result: dict) -> None:
        step, value = result.get("training_iteration"), result.get(self.metric)
        if step is None or value is None:
            return
        try:
            self.study.report(self._numbers[trial_id], int(step), float(value))
        except optuna.exceptions.UpdateFinishedTrialError:
            # A trial rerun after a restore from an older snapshot: its Optuna trial already finished.
            self._done.add(trial_id)

    def _link(self, trial_id: str, result: dict) -> None:
        run_id = result.get("mlflow_run_id") or run_of(trial_id)  # (made by the driver: search/tracking.py)
        if trial_id in self._linked and (run_id is None or self._linked[trial_id] == run_id):
            return
        number = self._numbers[trial_id]
        try:
            if trial_id not in self._linked:
                self.study.set_attr(number, "ray_trial_id", trial_id)
            if run_id:  # a tracking server down at the trial's start: its run (and id) come later, if it is
                # back before the trial ends (Optuna refuses attributes of a finished trial)
                self.study.set_attr(number, "mlflow_run_id", run_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._done.add(trial_id)
            return
        self._linked[trial_id] = run_id

    # -- Tune saves the searcher with its experiment and restores it after a crash ---------------------------------

    def save(self, checkpoint_path: str) -> None:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_open", "_space", "_checked")}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            saved = pickle.load(f)
        saved.pop("_url", None)  # this object's (from tuner.pkl, relocated by `study_at`) is where the study is now
        self.__dict__.update(saved)
        self._open, self._checked = None, False  # opened, and zombies looked for, at the next use

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if StudySearcher._restoring_at:
            self._url = StudySearcher._restoring_at

    def __getstate__(self):  # Tune pickles the searcher into tuner.pkl: no open database connections
        return {**self.__dict__, "_open": None, "_checked": False}


def is_seeded(trial: optuna.trial.FrozenTrial, n_points: int, marked: bool) -> bool:
    """Whether an Optuna trial runs a seeded point. `marked`: the study's trials carry the `seeded` attribute
    (studies made before it did: the seeded points are trials 0 .. n_points-1, as Optuna asks enqueued points
    first)."""
    return bool(trial.user_attrs.get(SEEDED)) if marked else trial.number < n_points


def seeded_numbers(study: optuna.Study, n_points: int) -> set[int]:
    """The numbers of the trials that ran (or run) a seeded point, zombies told FAIL included."""
    trials = study.get_trials(deepcopy=False)
    marked = any(SEEDED in t.user_attrs for t in trials)
    return {t.number for t in trials if is_seeded(t, n_points, marked)}
