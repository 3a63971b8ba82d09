"""The sweep coordinator: a thread in every `tuneforge serve` that runs the store's sweeps (services/sweeps.py).

One server coordinates a sweep at a time. It claims the sweep's row with a conditional UPDATE (owner,
heartbeat_at, as a worker claims a job), renews the heartbeat every HEARTBEAT_S, and loses the sweep to
the next server that looks once the heartbeat is older than the lease (or at once when it died on the
same host). Everything a coordinator knows is in the store: the Optuna study (the trials, their
parameters, the losses reported to the pruner, each trial's model id in its user attributes) and the
trials' models (their metric records and lifecycle). A server that takes over rebuilds its view from
them, and creates a trial's model with a retry token of its own (sweep, trial number), so a trial whose
create was cut short is created once: no trial runs twice. The trials' training is the job queue's
(models.create_model), so it goes on while the sweep changes hands.

Each tick of a claimed sweep:
1. every RUNNING trial: its model is created if it has none yet; its new evaluation records go to the
   pruner (tuneforge.sweeps.study.report_evaluation, the CLI's rule) and a pruned trial's training is
   stopped (models.stop_training: FAILED, curves kept); a model that ended is told to Optuna (ACTIVE:
   its finalLoss; FAILED: pruned, or failed with its lifecycleDetails);
2. new trials while fewer than the cluster's unitCount train and the study holds fewer than trialCount
   (a new trial is sampled only when a unit frees, so TPE sees every result so far);
3. the learning curve, once the search is done: the defaults on 25 % and 50 % subsets (stored as
   objects in the bucket CURVE_BUCKET) and on all the data (trial 0 when it finished), scored in a
   background thread (`python -m tuneforge.sweeps.score`), fitted (tuneforge.sweeps.learning_curve);
4. the sweep's snapshot (its ranked trials), its work request's log and percentComplete.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy import or_, select, update

from tuneforge.catalog import format_number
from tuneforge.hyperparams import total_training_steps
from tuneforge.jobs.queue import owner_is_dead, this_process
from tuneforge.run_folder import RunFolder, write_json_atomic
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError
from tuneforge.services.resources import clusters, models, objects, sweeps
from tuneforge.services.schemas.resources import CreateModelDetails
from tuneforge.services.schemas.sweeps import SweepSteps, SweepTrial
from tuneforge.store import workrequests
from tuneforge.store.tables import JobRow, SweepRow, WorkRequestRow, utcnow
from tuneforge.sweeps import learning_curve
from tuneforge.sweeps.results import SweepSummary
from tuneforge.sweeps.space import suggest
from tuneforge.sweeps.spec import Setup, prepare
from tuneforge.sweeps.study import STARTED, open_study, planned_trials, report_evaluation, summarize, tell_complete

log = logging.getLogger("tuneforge.sweeps")
HEARTBEAT_S = 2.0
CURVE_BUCKET = "tuneforge-sweeps"  # the learning curve's subset datasets, one folder per sweep
ENDED = ("ACTIVE", "FAILED", "DELETING", "DELETED")


@dataclass
class Claimed:
    """A sweep this server coordinates, and what it rebuilt from the store when it claimed it."""

    sweep_id: str
    caller: Caller
    setup: Setup
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    since: dict[str, int] = field(default_factory=dict)  # model id -> its next metric record
    reported: dict[int, set[int]] = field(default_factory=dict)  # trial number -> resources reported to the pruner
    scoring: Future | None = None  # the learning curve's scoring, in the background


class SweepCoordinator:
    def __init__(self, svc: Services, lease_seconds: float, poll_seconds: float = 1.0):
        self.svc, self.lease, self.poll_seconds = svc, timedelta(seconds=lease_seconds), poll_seconds
        self.me = this_process()
        self.claimed: dict[str, Claimed] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._scorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuneforge-sweep-score")
        self._last_beat = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tuneforge-sweeps", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30) -> None:
        """Let go of every sweep at once (another server need not wait for the lease to lapse)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self.svc.session() as session:
            session.execute(update(SweepRow).where(SweepRow.owner == self.me).values(owner=None, heartbeat_at=None))
            session.commit()
        self._scorer.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.step()
            except Exception:  # a database hiccup must not end coordination; the next step retries
                log.exception("sweep coordinator error")
            self._stopping.wait(self.poll_seconds)

    def step(self) -> None:
        self._heartbeat()
        for sweep_id in claim(self.svc, self.me, set(self.claimed), self.lease):
            self._take(sweep_id)
        for claimed in list(self.claimed.values()):
            if self._stopping.is_set():
                return
            try:
                if not tick(self.svc, claimed, self._scorer):
                    self._drop(claimed.sweep_id)
            except Exception:
                log.exception("sweep %s: coordination step failed; retrying", claimed.sweep_id)

    def _take(self, sweep_id: str) -> None:
        with self.svc.session() as session:
            row = session.get(SweepRow, sweep_id)
        try:
            setup = prepare(sweeps.spec_of(self.svc, row, worker_id=self.me))
            study, storage = _open_study(setup)
        except Exception as err:
            log.exception("sweep %s: cannot be opened", sweep_id)
            fail_sweep(self.svc, sweep_id, f"The sweep could not be started: {err}")
            return
        self.claimed[sweep_id] = Claimed(sweep_id, sweeps.caller_of(row), setup, study, storage)
        log.info("coordinating sweep %s (%d trial(s) in its study so far)", sweep_id, len(study.trials))
        _log(
            self.svc, sweep_id, f"Coordinated by {self.me.rsplit(':', 1)[0]} ({len(study.trials)} trial(s) in its study so far)."
        )

    def _drop(self, sweep_id: str) -> None:
        self.claimed.pop(sweep_id, None)
        with self.svc.session() as session:
            session.execute(update(SweepRow).where(SweepRow.id == sweep_id, SweepRow.owner == self.me).values(owner=None))
            session.commit()

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_beat < HEARTBEAT_S:
            return
        self._last_beat = now
        with self.svc.session() as session:
            for sweep_id in list(self.claimed):
                renewed = session.execute(
                    update(SweepRow).where(SweepRow.id == sweep_id, SweepRow.owner == self.me).values(heartbeat_at=utcnow())
                ).rowcount
                if not renewed:
                    log.warning("sweep %s was taken over by another server; leaving it", sweep_id)
                    self.claimed.pop(sweep_id, None)
            session.commit()


def claim(svc: Services, me: str, mine: set[str], lease: timedelta) -> list[str]:
    """The sweeps in progress that no live server coordinates, now ours. The UPDATE matches only the
    owner and the stale heartbeat that were read, so of two servers taking over one sweep one wins."""
    won = []
    cutoff = utcnow() - lease
    with svc.session() as session:
        rows = session.execute(
            select(SweepRow.id, SweepRow.owner, SweepRow.heartbeat_at).where(SweepRow.lifecycle_state.in_(sweeps.COORDINATED))
        ).all()
        for row in rows:
            if row.id in mine:
                continue
            stale = row.heartbeat_at is None or row.heartbeat_at < cutoff
            if row.owner is not None and row.owner != me and not stale and not owner_is_dead(row.owner):
                continue
            same_owner = SweepRow.owner.is_(None) if row.owner is None else SweepRow.owner == row.owner
            still = [same_owner]
            if row.owner not in (None, me) and not owner_is_dead(row.owner):
                still.append(or_(SweepRow.heartbeat_at.is_(None), SweepRow.heartbeat_at < cutoff))
            taken = session.execute(
                update(SweepRow).where(SweepRow.id == row.id, *still).values(owner=me, heartbeat_at=utcnow())
            ).rowcount
            session.commit()
            if taken:
                won.append(row.id)
    return won


def _open_study(setup: Setup) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    """The sweep's study, created with trial 0 (the defaults) by the first coordinator. Two servers
    creating Optuna's tables at the same moment: one of them fails and tries again (they exist then)."""
    for attempt in range(3):
        try:
            return open_study(setup)
        except Exception:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


# ---- one tick -------------------------------------------------------------------------------


def tick(svc: Services, c: Claimed, scorer: ThreadPoolExecutor) -> bool:
    """One round of work on a sweep; False once it needs no more coordination."""
    with svc.session() as session:
        row = session.get(SweepRow, c.sweep_id)
    if row is None or row.lifecycle_state not in sweeps.COORDINATED:
        return False
    if row.lifecycle_state == "ACCEPTED":
        _set_state(svc, c.sweep_id, "IN_PROGRESS", None)
    canceling = row.cancel_requested
    for frozen in c.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        _watch(svc, c, row, frozen, canceling)
    if not _in_progress(svc, c.sweep_id):  # a trial's create failed the sweep
        return False
    if not canceling:
        problem = _dataset_changed(svc, c, row)
        if problem:
            stop_all(svc, c, f"its sweep failed: {problem}")
            fail_sweep(svc, c.sweep_id, problem)
            return False
        _start_trials(svc, c, row)
    running = c.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    search_done = not running and len(c.study.get_trials(deepcopy=False, states=STARTED)) >= planned_trials(c.setup, c.study)
    summary = summarize(c.setup, c.study, stopped=False)
    _snapshot(svc, c, summary)
    curve = row.learning_curve
    if canceling:
        curve_busy = curve is not None and _stop_curve(svc, c, row)
        if not running and not curve_busy:
            _finish(svc, c.sweep_id, "CANCELED", "Canceled: the trials in training were stopped; finished ones are kept.")
            return False
        return True
    if search_done and curve is not None and curve.get("status") not in ("SUCCEEDED", "FAILED"):
        _curve_step(svc, c, row, summary, scorer)
        return True
    if search_done:
        _finish_search(svc, c, summary)
        return False
    return True


def _watch(svc: Services, c: Claimed, row: SweepRow, frozen: optuna.trial.FrozenTrial, canceling: bool) -> None:
    trial = _trial(c, frozen)
    model_id = frozen.user_attrs.get("modelId")
    if model_id is None:
        if canceling:
            _tell_failed(c, trial, "the sweep was canceled before this trial's model was created")
            return
        model_id = _create_trial_model(svc, c, row, trial)
        if model_id is None:
            return
    metrics = models.training_metrics(svc, c.caller, model_id, since=c.since.get(model_id, 0))
    c.since[model_id] = metrics.next
    reported = c.reported.setdefault(frozen.number, set(frozen.intermediate_values))
    planned = c.setup.config(trial.params)["totalTrainingEpochs"] * c.setup.n_train
    stopping = frozen.user_attrs.get("stopReason")
    for record in metrics.items:
        if stopping is None and report_evaluation(trial, record, c.setup.n_train, planned, reported):
            stopping = "pruned"
            _stop(svc, c, trial, model_id, "pruned", _pruned_words(row, record, c.setup.n_train))
            _log(
                svc,
                c.sweep_id,
                f"Trial {frozen.number} pruned after {record['step']} steps (validation loss {record['validationLoss']:.4g}).",
            )
    step = (metrics.progress or {}).get("step")
    if step is not None and step != frozen.user_attrs.get("stepsRun"):
        trial.set_user_attr("stepsRun", step)
    if canceling and stopping is None and metrics.lifecycle_state == "CREATING":
        _stop(svc, c, trial, model_id, "canceled", f"Stopped: its sweep {row.display_name} ({row.id}) was canceled.")
    if metrics.lifecycle_state in ENDED:
        _tell_end(svc, c, trial, model_id, metrics.lifecycle_state, frozen.user_attrs.get("stopReason") or stopping)


def _trial(c: Claimed, frozen: optuna.trial.FrozenTrial) -> optuna.Trial:
    """A live handle on a trial the study holds (one this coordinator, or an earlier one, asked for)."""
    study_id = c.storage.get_study_id_from_name(c.study.study_name)
    return optuna.trial.Trial(c.study, c.storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number))


def _pruned_words(row: SweepRow, record: dict[str, Any], n_train: int) -> str:
    return (
        f"Pruned by sweep {row.display_name} ({row.id}): after {round(record['epoch'] * n_train)} training examples "
        f"(step {record['step']}) its validation loss {record['validationLoss']:.4g} was not in the better half of the "
        "sweep's trials at that point (successive halving), so its training was stopped; its curves are kept."
    )


def _stop(svc: Services, c: Claimed, trial: optuna.Trial, model_id: str, why: str, reason: str) -> None:
    trial.set_user_attr("stopReason", why)
    with contextlib.suppress(ServiceError):  # it ended meanwhile (ACTIVE, FAILED or deleted): _tell_end reads what it became
        models.stop_training(svc, c.caller, model_id, reason)


def _tell_end(svc: Services, c: Claimed, trial: optuna.Trial, model_id: str, state: str, stop_reason: str | None) -> None:
    model = models.get_model(svc, c.caller, model_id).value
    result = models.run_result(svc, c.caller, model_id) or {}
    trial.set_user_attr("seconds", float((result.get("timings") or {}).get("totalSeconds", 0.0)))
    if state == "ACTIVE" and model.model_metrics is not None:
        metrics = model.model_metrics
        steps = int(result.get("stepsRun", trial.user_attrs.get("stepsRun", 0)))
        tell_complete(
            c.study,
            trial,
            final_loss=metrics.final_loss,
            final_accuracy=metrics.final_accuracy,
            steps_run=steps,
            early_stopped=bool(result.get("earlyStopped")),
        )
        loss = format_number(round(metrics.final_loss, 6))
        _log(svc, c.sweep_id, f"Trial {trial.number} finished: validation loss {loss} (model {model_id}).")
    elif stop_reason == "pruned":
        c.study.tell(trial, state=TrialState.PRUNED)
    elif state in ("DELETING", "DELETED"):
        _tell_failed(c, trial, "its model was deleted while it trained")
    else:
        _tell_failed(c, trial, model.lifecycle_details or "its training failed")
        _log(svc, c.sweep_id, f"Trial {trial.number} failed: {model.lifecycle_details}")


def _tell_failed(c: Claimed, trial: optuna.Trial, why: str) -> None:
    trial.set_user_attr("error", why)
    c.study.tell(trial, state=TrialState.FAIL)


def _start_trials(svc: Services, c: Claimed, row: SweepRow) -> None:
    try:
        units = clusters.get_cluster(svc, c.caller, row.cluster_id).value.unit_count
    except ServiceError:
        units = 1  # the cluster is gone: the next trial's create says so
    planned = planned_trials(c.setup, c.study)
    while len(c.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) < units:
        if len(c.study.get_trials(deepcopy=False, states=STARTED)) >= planned:
            return
        trial = c.study.ask()
        if _create_trial_model(svc, c, row, trial) is None:
            return


def _create_trial_model(svc: Services, c: Claimed, row: SweepRow, trial: optuna.Trial) -> str | None:
    """The trial's custom model (the same one again when an earlier coordinator created it: the retry
    token is the trial's); None when it could not be created now."""
    setup = c.setup
    params = suggest(trial, setup.space, setup.model)
    config = setup.config(params)
    details = _model_details(
        row,
        setup,
        f"{row.display_name}-trial-{trial.number:03d}",
        row.training_dataset,
        {**config},
        f"Trial {trial.number} of sweep {row.display_name} ({row.id}).",
    )
    try:
        model_id = models.create_model(svc, c.caller, details, f"tuneforge-sweep-{row.id}-trial-{trial.number}").value.id
    except ServiceError as err:
        if err.status == 429 or err.status >= 500:
            return None  # the tenancy's queue is full: the next tick tries again
        if trial.number == 0 or not err.message.startswith("fineTuneDetails.trainingConfig."):
            # Not this trial's settings (the data, the cluster): every trial would fail the same way.
            stop_all(svc, c, f"its sweep failed: {err.message}")
            _tell_failed(c, trial, err.message)
            fail_sweep(svc, c.sweep_id, f"Trial {trial.number} could not be created: {err.message}")
            return None
        _tell_failed(c, trial, err.message)
        return None
    trial.set_user_attr("modelId", model_id)
    trial.set_user_attr(
        "totalTrainingSteps", total_training_steps(setup.n_train, config["trainingBatchSize"], config["totalTrainingEpochs"])
    )
    shown = ", ".join(f"{k}={format_number(v)}" for k, v in params.items())
    _log(svc, c.sweep_id, f"Trial {trial.number} started: model {model_id} ({shown or 'the defaults'}).")
    return model_id


def _model_details(row: SweepRow, setup: Setup, name: str, dataset: dict, config: dict, description: str) -> CreateModelDetails:
    ds = {k: v for k, v in dataset.items() if k != "etag"}
    return CreateModelDetails.model_validate(
        {
            "compartmentId": row.compartment_id,
            "baseModelId": row.base_model_id,
            "displayName": name,
            "description": description,
            "fineTuneDetails": {
                "trainingDataset": ds,
                "dedicatedAiClusterId": row.cluster_id,
                "trainingConfig": {"trainingConfigType": setup.model.training_config_type, **config},
            },
        }
    )


def _dataset_changed(svc: Services, c: Claimed, row: SweepRow) -> str | None:
    """Every trial trains on the same data: a dataset object replaced or deleted mid-sweep ends it."""
    ds = row.training_dataset
    where = f"{ds['namespaceName']}/{ds['bucketName']}/{ds['objectName']}"
    try:
        current = objects.get_object(svc, c.caller, ds["namespaceName"], ds["bucketName"], ds["objectName"]).etag
    except ServiceError:
        return f"trainingDataset: the object {where} was deleted during the sweep; its trials must all train on the same data"
    if current != ds["etag"]:
        return f"trainingDataset: the object {where} was replaced during the sweep; its trials must all train on the same data"
    return None


def stop_all(svc: Services, c: Claimed, reason: str) -> None:
    """Stop every trial in training (the sweep failed), telling Optuna they failed."""
    for frozen in c.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial = _trial(c, frozen)
        if model_id := frozen.user_attrs.get("modelId"):
            _stop(svc, c, trial, model_id, "failed", f"Stopped: {reason}")
        _tell_failed(c, trial, reason)


# ---- the sweep's record -----------------------------------------------------------------------


def _trial_json(row, model_id: str | None, queued: bool = False) -> dict[str, Any]:
    # Optuna's RUNNING means "asked for"; the user's RUNNING means training: a trial whose job still
    # waits for a unit of the cluster (or a worker) says QUEUED.
    state = "QUEUED" if queued and row.state == "running" else row.state.upper()
    trial = SweepTrial(
        number=row.number,
        model_id=model_id,
        is_defaults=row.is_defaults,
        state=state,
        params=row.params,
        validation_loss=row.validation_loss,
        validation_accuracy=row.validation_accuracy,
        steps_run=row.steps_run,
        steps_planned=row.steps_planned,
        is_early_stopped=row.early_stopped,
        seconds=round(row.seconds, 1),
        error=row.error,
    )
    return trial.model_dump(by_alias=True, exclude_none=True)


def results_of(summary: SweepSummary, model_ids: dict[int, str], queued: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The sweep's `results` column; `queued`: the trials' models whose training job waits in the queue."""
    best, base = summary.best, summary.defaults
    steps = summary.steps()
    return {
        "trials": [_trial_json(r, model_ids.get(r.number), model_ids.get(r.number) in queued) for r in summary.rows],
        "trialsFinished": sum(r.state in ("complete", "pruned", "failed") for r in summary.rows),
        "bestTrialNumber": best.number if best else None,
        "bestModelId": model_ids.get(best.number) if best else None,
        "bestValidationLoss": best.validation_loss if best else None,
        "defaultsValidationLoss": base.validation_loss if base and base.state == "complete" else None,
        "gainOverDefaults": summary.gain,
        "steps": SweepSteps(
            planned=steps["planned"],
            run=steps["run"],
            saved_by_pruning=steps["savedByPruning"],
            saved_by_early_stopping=steps["savedByEarlyStopping"],
            pruned_share=steps["prunedShare"],
        ).model_dump(by_alias=True),
    }


def _snapshot(svc: Services, c: Claimed, summary: SweepSummary) -> None:
    model_ids = {t.number: t.user_attrs["modelId"] for t in c.study.get_trials(deepcopy=False) if "modelId" in t.user_attrs}
    planned = max(1, summary.trials + (1 if _curve_asked(svc, c.sweep_id) else 0))
    with svc.session() as session:
        waiting = select(JobRow.model_id).where(JobRow.model_id.in_(list(model_ids.values())), JobRow.state == "QUEUED")
        results = results_of(summary, model_ids, frozenset(session.scalars(waiting)))
        row = session.get(SweepRow, c.sweep_id)
        if row.results == results:
            return
        row.results, row.time_updated = results, utcnow()
        wr = session.get(WorkRequestRow, row.work_request_id)
        pct = round(min(99.0, 100.0 * results["trialsFinished"] / planned), 2)
        if wr is not None and wr.status in ("ACCEPTED", "IN_PROGRESS") and pct != wr.percent_complete:
            wr.percent_complete, wr.revision = pct, wr.revision + 1
        session.commit()


def _in_progress(svc: Services, sweep_id: str) -> bool:
    with svc.session() as session:
        return session.scalar(select(SweepRow.lifecycle_state).where(SweepRow.id == sweep_id)) in sweeps.COORDINATED


def _curve_asked(svc: Services, sweep_id: str) -> bool:
    with svc.session() as session:
        return session.scalar(select(SweepRow.learning_curve).where(SweepRow.id == sweep_id)) is not None


def _log(svc: Services, sweep_id: str, message: str) -> None:
    with svc.session() as session:
        wr_id = session.scalar(select(SweepRow.work_request_id).where(SweepRow.id == sweep_id))
        workrequests.log(session, wr_id, message)
        session.commit()


def _set_state(svc: Services, sweep_id: str, state: str, details: str | None, wr_status: str | None = None) -> None:
    with svc.session() as session:
        row = session.get(SweepRow, sweep_id)
        row.lifecycle_state, row.lifecycle_details, row.time_updated = state, details, utcnow()
        wr = session.get(WorkRequestRow, row.work_request_id)
        if wr is not None and wr_status is not None and wr.status in ("ACCEPTED", "IN_PROGRESS"):
            workrequests.finish(session, wr, wr_status)
        elif wr is not None and wr.status == "ACCEPTED":
            wr.status, wr.time_started, wr.revision = "IN_PROGRESS", utcnow(), wr.revision + 1
        if state in ("SUCCEEDED", "FAILED", "CANCELED"):
            row.owner = None
        session.commit()


def _finish(svc: Services, sweep_id: str, state: str, details: str) -> None:
    _log(svc, sweep_id, details)
    _set_state(svc, sweep_id, state, details, wr_status=state)


def fail_sweep(svc: Services, sweep_id: str, message: str) -> None:
    _finish(svc, sweep_id, "FAILED", message)


def _finish_search(svc: Services, c: Claimed, summary: SweepSummary) -> None:
    best = summary.best
    if best is None:
        if summary.trials == 0:
            _finish(svc, c.sweep_id, "SUCCEEDED", "The learning curve is done (no hyperparameter search was asked for).")
            return
        errors = {r.error for r in summary.rows if r.error}
        fail_sweep(svc, c.sweep_id, "No trial finished: " + ("; ".join(sorted(errors)[:3]) or "every trial was pruned or failed"))
        return
    loss = format_number(round(best.validation_loss, 6))
    words = f"Best: trial {best.number}, validation loss {loss}"
    if summary.gain is not None and not best.is_defaults:
        words += f", {100 * summary.gain:.1f} % below the defaults' {format_number(round(summary.defaults.validation_loss, 6))}"
    elif best.is_defaults:
        words += " (the defaults: no trial beat them)"
    steps = summary.steps()
    if steps["savedByPruning"]:
        words += f"; the pruner saved {steps['savedByPruning']} of {steps['planned']} planned training steps"
    _finish(svc, c.sweep_id, "SUCCEEDED", words + ".")


# ---- the learning curve -----------------------------------------------------------------------


def _set_curve(svc: Services, sweep_id: str, curve: dict[str, Any]) -> None:
    with svc.session() as session:
        row = session.get(SweepRow, sweep_id)
        if row.learning_curve != curve:
            row.learning_curve, row.time_updated = curve, utcnow()
            session.commit()


def _curve_step(svc: Services, c: Claimed, row: SweepRow, summary: SweepSummary, scorer: ThreadPoolExecutor) -> None:
    curve = dict(row.learning_curve)
    points = learning_curve.plan(c.setup)
    if isinstance(points, str):  # too small a dataset: the answer says so, and nothing trains
        _set_curve(
            svc, c.sweep_id, {"status": "SUCCEEDED", "fitted": False, "verdict": points, "formula": learning_curve.FORMULA}
        )
        return
    if curve["status"] == "ACCEPTED":
        curve["status"], curve["details"] = (
            "IN_PROGRESS",
            "training the default configuration on 25 %, 50 % and 100 % of the data",
        )
        _log(svc, c.sweep_id, "Learning curve: training the defaults on 25 %, 50 % and 100 % of the training split.")
    ids = dict(curve.get("modelIds") or {})
    trial0 = next((t for t in c.study.get_trials(deepcopy=False) if t.number == 0 and t.state == TrialState.COMPLETE), None)
    if "100" not in ids and trial0 is not None and models.run_dir(svc, c.caller, trial0.user_attrs["modelId"]) is not None:
        ids["100"] = trial0.user_attrs["modelId"]  # trial 0 is the same run (the defaults on all the data), unless it was deleted
    for point in points:
        pct = str(round(100 * point.fraction))
        if pct not in ids:
            model_id = _create_curve_model(svc, c, row, point, pct)
            if model_id is None:
                break
            ids[pct] = model_id
    curve["modelIds"] = ids
    states = {pct: models.get_model(svc, c.caller, model_id).value for pct, model_id in ids.items()}
    failed = [(pct, m) for pct, m in states.items() if m.lifecycle_state != "ACTIVE" and m.lifecycle_state != "CREATING"]
    if failed:
        pct, model = failed[0]
        curve.update(
            status="FAILED",
            details=f"The {pct} % run ended {model.lifecycle_state}: {model.lifecycle_details or 'see its model'}",
        )
        _set_curve(svc, c.sweep_id, curve)
        return
    if len(ids) < len(points) or any(m.lifecycle_state != "ACTIVE" for m in states.values()):
        _set_curve(svc, c.sweep_id, curve)
        return
    folders = {pct: models.run_dir(svc, c.caller, model_id) for pct, model_id in ids.items()}
    scored = [replace(p, folder=RunFolder(folders[str(round(100 * p.fraction))])) for p in points]
    if c.scoring is None:
        curve["details"] = "scoring every run on the whole validation split"
        write_json_atomic(c.setup.folder.results_json, summary.to_json())  # what the analysis compares the search with
        runs = [(p.folder, p.scores) for p in scored]
        best = summary.best
        best_dir = models.run_dir(svc, c.caller, (row.results or {}).get("bestModelId")) if best is not None else None
        if best is not None and not best.is_defaults and best_dir is not None:
            runs.append((RunFolder(best_dir), learning_curve.best_scores(c.setup, best.number)))
        elif best is not None and not best.is_defaults:  # the best trial's model was deleted: nothing to compare with
            write_json_atomic(c.setup.folder.results_json, {**summary.to_json(), "gainOverDefaults": None})
        c.scoring = scorer.submit(learning_curve.score_runs, c.setup, runs, lambda event: None)
        _set_curve(svc, c.sweep_id, curve)
        return
    if not c.scoring.done():
        return
    try:
        c.scoring.result()
        result = learning_curve.analyse(c.setup, scored)
    except Exception as err:
        log.exception("sweep %s: the learning curve's scoring failed", c.sweep_id)
        curve.update(status="FAILED", details=f"Scoring the runs failed: {err}")
        _set_curve(svc, c.sweep_id, curve)
        return
    finally:
        c.scoring = None
    for point in result["points"]:
        point.pop("runFolder", None)
        point["modelId"] = ids[str(round(100 * point["fraction"]))]
    curve.update(result, status="SUCCEEDED", details=None)
    _set_curve(svc, c.sweep_id, curve)
    _log(svc, c.sweep_id, f"Learning curve: {result['verdict']}")


def _create_curve_model(svc: Services, c: Claimed, row: SweepRow, point: learning_curve.Point, pct: str) -> str | None:
    if point.fraction < 1.0:
        learning_curve.write_subset(c.setup, point)
        dataset = _store_subset(svc, c.caller, point.dataset, f"{row.id}/{point.dataset.name}")
    else:
        dataset = row.training_dataset
    description = f"Learning curve of sweep {row.display_name} ({row.id}): the defaults on {pct} % of the training split."
    details = _model_details(row, c.setup, f"{row.display_name}-curve-{pct}", dataset, c.setup.config({}), description)
    try:
        return models.create_model(svc, c.caller, details, f"tuneforge-sweep-{row.id}-curve-{pct}").value.id
    except ServiceError as err:
        if err.status == 429 or err.status >= 500:
            return None
        curve = dict(row.learning_curve, status="FAILED", details=f"The {pct} % run could not be created: {err.message}")
        _set_curve(svc, c.sweep_id, curve)
        return None


def _store_subset(svc: Services, caller: Caller, path, name: str) -> dict[str, str]:
    """A subset as an object of the tenancy's own (bucket CURVE_BUCKET): a model trains on an object,
    and the user can read exactly what each run of the curve trained on."""
    namespace = objects.namespace_of(caller)
    objects.put_bytes(svc, caller, namespace, CURVE_BUCKET, name, path.read_bytes(), "application/x-ndjson")
    return {"namespaceName": namespace, "bucketName": CURVE_BUCKET, "objectName": name}


def _stop_curve(svc: Services, c: Claimed, row: SweepRow) -> bool:
    """Canceling: stop the curve's runs in training; whether any is still training."""
    curve = row.learning_curve or {}
    busy = False
    for model_id in (curve.get("modelIds") or {}).values():
        if models.get_model(svc, c.caller, model_id).value.lifecycle_state == "CREATING":
            busy = True
            with contextlib.suppress(ServiceError):
                models.stop_training(svc, c.caller, model_id, f"Stopped: its sweep {row.display_name} ({row.id}) was canceled.")
    if not busy and curve.get("status") not in ("SUCCEEDED", "FAILED"):
        _set_curve(svc, c.sweep_id, {**curve, "status": "FAILED", "details": "Canceled with its sweep."})
    return busy
