"""The hyperparameter search: an Optuna study whose trials are real fine-tunes, `tuneforge train`
subprocesses (tuneforge.sweeps.trials), pruned by successive halving on their evaluation cycles.

- Trial 0 is always the defaults (the catalog's, with the fixed flags), enqueued when the study is
  created, so the summary says how much the search gained over them.
- Samplers: `tpe` (Optuna's TPE, multivariate, seeded, with the constant liar so that parallel
  trials do not all sample the same point; its first STARTUP_SHARE of the trials are random),
  `random`, and `grid` (every combination of the space enqueued in order after trial 0, skipping
  the defaults' own point; a range contributes its low, middle and high values).
- Pruner `asha`: Optuna's successive halving with reduction factor 2. Its unit of progress is the
  training examples a trial has processed (epoch x training examples, from each evaluation record of
  metrics.jsonl): trials with other batch sizes compare at the same amount of training. Rungs at
  1/8, 1/4 and 1/2 of trial 0's planned examples (none is decided past 3/4 of a trial's own run:
  stopping it there would save little); at each, a trial continues only if its evaluation-cycle
  validation loss is in the better half of the trials that reached that rung (the best so far,
  while fewer than 4 did). A pruned trial is stopped by SIGTERM (it checkpoints, exits 3, and its
  checkpoint is then deleted). `none` runs every trial to its end.
- Storage: Optuna's RDB storage, SQLite in the output folder unless `spec.storage_url` names another
  database (the service passes PostgreSQL so that several servers share one study). A trial that
  was running when the sweep stopped (Ctrl-C, a crash) stays RUNNING in the study, owned by
  `spec.worker_id`; the next `run_sweep` with the same worker continues it from its checkpoint.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from tuneforge.errors import TuneForgeError
from tuneforge.hyperparams import total_training_steps
from tuneforge.run_folder import ExitCode, RunFolder, write_json_atomic
from tuneforge.sweeps.report import write_report
from tuneforge.sweeps.results import SweepSummary, rank, row_from_trial
from tuneforge.sweeps.space import grid_points, suggest
from tuneforge.sweeps.spec import Setup, SweepSpec, prepare
from tuneforge.sweeps.trials import TrainJob, TrainProcess, make_slots, never, run_jobs, visible_gpus

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Trial 0 (the defaults) may lie outside a searched range on purpose (a baseline): Optuna warns about it.
warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")

STARTUP_SHARE = 3  # TPE samples the first max(3, trials // 3) trials at random (trial 0 included), at most 10
REDUCTION_FACTOR = 2
FIRST_RUNG_SHARE = 8  # the first rung at 1/8 of trial 0's planned training
LAST_DECISION = 0.75  # no pruning decision past 3/4 of a trial's own planned training
STARTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)

Event = dict[str, Any]  # {"event": "trial-started" | "trial-finished" | "note", ...}: progress for the CLI / service


@dataclass
class _Trial:
    """What the sweep keeps about a trial while its run goes on."""

    trial: optuna.Trial
    reported: set[int]  # resources already reported (a resumed run replays its records up to its checkpoint)
    seconds_before: float  # time spent by earlier attempts
    planned_examples: int  # training examples the run processes if it is not stopped


@dataclass
class _Sweep:
    setup: Setup
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    on_event: Callable[[Event], None]
    tracker: Any  # tuneforge.tracking's sweep tracker (a no-op one without --mlflow-tracking-uri)
    abort: list[str] = field(default_factory=list)  # a message that ends the sweep (e.g. a bad input)

    @property
    def spec(self) -> SweepSpec:
        return self.setup.spec


def run_sweep(
    spec: SweepSpec,
    *,
    resume: bool = False,
    should_stop: Callable[[], bool] = never,
    on_event: Callable[[Event], None] = lambda e: None,
) -> SweepSummary:
    """Run (or, with `resume`, continue) the sweep `spec` describes until the study holds `spec.trials`
    finished trials or `should_stop()` turns true (then every running trial is checkpointed and
    `summary.stopped` is set). Returns the ranked summary, also written to results.json, sweep.html
    and best/."""
    from tuneforge.tracking import sweep_tracker

    setup = prepare(spec)
    setup.folder.pin(setup.base_identity(), setup.search_identity(), resume=resume)
    for note in setup.notes:
        on_event({"event": "note", "message": note})
    study, storage = open_study(setup)
    sweep = _Sweep(setup, study, storage, on_event, sweep_tracker(spec.mlflow_tracking_uri, setup, study))
    slots = make_slots(spec.parallel, spec.threads, visible_gpus(spec.device))
    interrupted = run_jobs(
        spec,
        slots,
        _jobs(sweep),
        on_records=lambda p, r: _on_records(sweep, p, r),
        on_exit=lambda p: _on_exit(sweep, p),
        should_stop=lambda: should_stop() or bool(sweep.abort),
        log_path=lambda job: setup.folder.log(job.name),
    )
    summary = summarize(setup, study, stopped=interrupted)
    write_outputs(setup, summary)
    sweep.tracker.end(summary)
    if sweep.abort:
        raise TuneForgeError(sweep.abort[0])
    return summary


def open_study(setup: Setup) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    spec = setup.spec
    storage = optuna.storages.RDBStorage(spec.storage())
    study = optuna.create_study(
        storage=storage,
        study_name=spec.study_name,
        direction="minimize",
        sampler=make_sampler(setup),
        pruner=make_pruner(setup),
        load_if_exists=True,
    )
    if not study.trials:  # new: trial 0 is the defaults; a grid's points follow in order
        defaults = setup.defaults.to_api()
        study.enqueue_trial({name: defaults[name] for name in setup.space})
        if spec.search == "grid":
            for point in grid_points(setup.space, setup.model):
                study.enqueue_trial(point, skip_if_exists=True)
    return study, storage


def make_sampler(setup: Setup) -> optuna.samplers.BaseSampler:
    spec = setup.spec
    if spec.search == "tpe":
        startup = min(10, max(3, spec.trials // STARTUP_SHARE))
        return optuna.samplers.TPESampler(seed=spec.seed, multivariate=True, constant_liar=True, n_startup_trials=startup)
    return optuna.samplers.RandomSampler(seed=spec.seed)  # grid: every trial is enqueued, the sampler is never asked


def make_pruner(setup: Setup) -> optuna.pruners.BasePruner:
    if setup.spec.pruner == "none":
        return optuna.pruners.NopPruner()
    planned = setup.defaults.total_training_epochs * setup.n_train
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=max(1, planned // FIRST_RUNG_SHARE), reduction_factor=REDUCTION_FACTOR
    )


def planned_trials(setup: Setup, study: optuna.Study) -> int:
    """`spec.trials`, or fewer for a grid with fewer points (all of them are enqueued up front)."""
    if setup.spec.search == "grid":
        return min(setup.spec.trials, len(study.get_trials(deepcopy=False)))
    return setup.spec.trials


# --- the trials ----------------------------------------------------------------------------------


def _jobs(sweep: _Sweep) -> Iterator[TrainJob]:
    """First the trials this worker left running (continued from their checkpoints), then new ones
    until the study holds the planned number. Lazy: a new trial is sampled when a slot frees, so the
    sampler sees every result so far."""
    study, storage = sweep.study, sweep.storage
    study_id = storage.get_study_id_from_name(study.study_name)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.user_attrs.get("worker") == sweep.spec.worker_id:
            trial = optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number))
            yield _job(sweep, trial, frozen.user_attrs, set(frozen.intermediate_values))
    while len(study.get_trials(deepcopy=False, states=STARTED)) < planned_trials(sweep.setup, study):
        yield _job(sweep, study.ask(), {}, set())


def _job(sweep: _Sweep, trial: optuna.Trial, attrs: dict[str, Any], reported: set[int]) -> TrainJob:
    setup = sweep.setup
    params = suggest(trial, setup.space, setup.model)
    config = setup.config(params)
    folder = RunFolder(setup.folder.trial_dir(trial.number))
    trial.set_user_attr("worker", sweep.spec.worker_id)
    trial.set_user_attr("runFolder", str(folder.path.relative_to(setup.folder.path)))
    steps = total_training_steps(setup.n_train, config["trainingBatchSize"], config["totalTrainingEpochs"])
    trial.set_user_attr("totalTrainingSteps", steps)
    env = {}
    if run_id := sweep.tracker.trial_run(trial.number, attrs.get("mlflowRunId")):
        trial.set_user_attr("mlflowRunId", run_id)
        env["MLFLOW_RUN_ID"] = run_id  # the trial's `tuneforge train --mlflow-tracking-uri` logs into this nested run
    sweep.on_event({"event": "trial-started", "trial": trial.number, "params": params, "resumed": folder.can_resume()})
    planned = config["totalTrainingEpochs"] * setup.n_train
    state = _Trial(trial, reported, seconds_before=float(attrs.get("seconds", 0.0)), planned_examples=planned)
    return TrainJob(f"trial-{trial.number:03d}", folder, sweep.spec.dataset, config, env, tag=state)


def _on_records(sweep: _Sweep, proc: TrainProcess, records: list[dict[str, Any]]) -> None:
    """Feed each evaluation cycle's validation loss to the pruner; stop the run when it says so."""
    state: _Trial = proc.job.tag
    for record in records:
        if proc.stop_reason is None and report_evaluation(
            state.trial, record, sweep.setup.n_train, state.planned_examples, state.reported
        ):
            proc.stop("pruned")


def report_evaluation(
    trial: optuna.Trial, record: dict[str, Any], n_train: int, planned_examples: int, reported: set[int]
) -> bool:
    """Feed one metric record of a trial's run to the pruner (only evaluation records count); whether
    the trial should be stopped now. Its unit of progress is the training examples processed
    (epoch x `n_train`); `reported` holds the ones already reported (a resumed run, or a coordinator
    that took over, replays records) and gains this one. The CLI and the service both call this."""
    if record.get("kind") != "eval" or record.get("validationLoss") is None:  # a NaN loss is written as null
        return False
    resource = round(record["epoch"] * n_train)
    trial.set_user_attr("lastValidationLoss", record["validationLoss"])
    trial.set_user_attr("lastValidationAccuracy", record["validationAccuracy"])
    if resource in reported:
        return False
    reported.add(resource)
    trial.report(record["validationLoss"], resource)
    # Past LAST_DECISION of its own run, stopping a trial would save little: let it finish.
    return resource < LAST_DECISION * planned_examples and trial.should_prune()


def tell_complete(
    study: optuna.Study, trial: optuna.Trial, *, final_loss: float, final_accuracy: float, steps_run: int, early_stopped: bool
) -> None:
    """A trial that finished: its objective is the run's finalLoss (the kept adapter on the whole validation split)."""
    trial.set_user_attr("finalAccuracy", final_accuracy)
    trial.set_user_attr("stepsRun", steps_run)
    trial.set_user_attr("earlyStopped", early_stopped)
    study.tell(trial, final_loss)


def _on_exit(sweep: _Sweep, proc: TrainProcess) -> None:
    state: _Trial = proc.job.tag
    trial, folder, code = state.trial, proc.job.folder, proc.proc.returncode
    progress = folder.read_progress()
    trial.set_user_attr("seconds", state.seconds_before + proc.seconds)
    trial.set_user_attr("stepsRun", progress.step if progress else 0)
    # Finished is finished, whatever the exit status (a prune decision can cross the run's own end).
    result = folder.read_result() if folder.is_finished() else None
    if result is not None:
        tell_complete(
            sweep.study,
            trial,
            final_loss=result.final_loss,
            final_accuracy=result.final_accuracy,
            steps_run=result.steps_run,
            early_stopped=result.early_stopped,
        )
    elif code == ExitCode.STOPPED and proc.stop_reason == "pruned":
        sweep.study.tell(trial, state=TrialState.PRUNED)
        shutil.rmtree(folder.checkpoint_dir, ignore_errors=True)  # never resumed: free the disk
    elif code == ExitCode.STOPPED:
        # Ctrl-C, or a SIGTERM from outside: the trial stays RUNNING, --resume continues it from its checkpoint.
        sweep.on_event({"event": "trial-stopped", "trial": trial.number, "step": progress.step if progress else 0})
        return
    else:
        error = folder.read_error()
        why = error.message if error else f"exited with status {code}; see {proc.job.name}.log in {sweep.setup.folder.logs}"
        trial.set_user_attr("error", why)
        sweep.study.tell(trial, state=TrialState.FAIL)
        if code == ExitCode.BAD_INPUT:  # the data or the weights: every other trial would fail the same way
            sweep.abort.append(f"trial {trial.number}: {why}")
    frozen = next(t for t in sweep.study.get_trials(deepcopy=False) if t.number == trial.number)
    row = row_from_trial(frozen, list(sweep.setup.space))
    sweep.tracker.trial_done(row, frozen.user_attrs.get("mlflowRunId"))
    summary = summarize(sweep.setup, sweep.study, stopped=False)
    write_outputs(sweep.setup, summary)
    sweep.on_event({"event": "trial-finished", "row": row, "best": summary.best})


# --- the outcome ---------------------------------------------------------------------------------


def summarize(setup: Setup, study: optuna.Study, *, stopped: bool) -> SweepSummary:
    searched = list(setup.space)
    rows = rank([row_from_trial(t, searched) for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING])
    return SweepSummary(rows, searched, planned_trials(setup, study), stopped=stopped, notes=list(setup.notes))


def write_outputs(setup: Setup, summary: SweepSummary) -> None:
    """results.json, best/ and sweep.html, rewritten after every trial so that they can be watched."""
    write_json_atomic(setup.folder.results_json, summary.to_json())
    if summary.best is not None:
        setup.folder.link_best(summary.best.number)
    write_report(setup.folder)
