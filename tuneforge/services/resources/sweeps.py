"""Sweeps (/20231130/sweeps, TuneForge's own resource; OCI has none): a hyperparameter search whose
trials are ordinary custom models, trained on a FINE_TUNING cluster's units, and, when asked, the
"would more data help?" learning curve.

    create   validates everything a trial needs up front, the way create_model does (base model, fixed
             trainingConfig, search space against the catalog exactly as `tuneforge sweep --param`,
             cluster, every line of the dataset) and queues the sweep: ACCEPTED, and its CREATE_SWEEP
             work request; a coordinator (sweep_coordinator.py) then runs it IN_PROGRESS -> SUCCEEDED
    get/list the sweep with its ranked trials (a snapshot the coordinator keeps up to date)
    cancel   CANCELING: the coordinator stops the trials in training (their models end FAILED, curves
             kept), then CANCELED; finished trials stay as they are
    keepBest renames the best trial's model and, if asked, deletes the other trials' models
    learningCurve  asks for the learning curve of a sweep that ran without it

The search itself is tuneforge.sweeps (space, study, pruner, results, learning curve): the service
builds a `SweepSpec` from the request and calls the same functions as the CLI. The Optuna study lives
in the service's own database (a schema `optuna` on PostgreSQL; on SQLite a file beside the database,
which cannot hold a second Alembic history), one study per sweep, so several servers share it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tuneforge import data
from tuneforge.data import DEFAULT_SEED
from tuneforge.errors import DatasetError, TuneForgeError
from tuneforge.hyperparams import DPO_TRAINING_CONFIG, FIELD_TYPES, make_plan
from tuneforge.jobs import lifecycle
from tuneforge.services import idempotency
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError, incorrect_state, invalid
from tuneforge.services.protocol import Answer, Page, check_if_match, etag, listing, rfc3339, sorted_by, sql_page
from tuneforge.services.resources import base_models, clusters, datasets, imported_models, models, objects
from tuneforge.services.schemas.sweeps import (
    CreateSweepDetails,
    KeepBestDetails,
    KeepBestResult,
    LearningCurve,
    Sweep,
    SweepSummary,
)
from tuneforge.services.tenancy import owned
from tuneforge.services.transactions import Conflict, commit_versioned, retrying
from tuneforge.store import ids, workrequests
from tuneforge.store.db import normalize_url
from tuneforge.store.tables import ImportedModelRow, ModelRow, SweepRow, utcnow
from tuneforge.sweeps import SweepSpec, prepare, space_from_json, space_to_json
from tuneforge.sweeps.space import for_method

STATES = ("ACCEPTED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "CANCELING", "CANCELED")
COORDINATED = ("ACCEPTED", "IN_PROGRESS", "CANCELING")  # states a coordinator works on
FINISHED = ("SUCCEEDED", "CANCELED", "FAILED")
SWEEP_OCID = "generativeaisweep"
ENTITY = "GenerativeAiSweep"
OPTUNA_SCHEMA = "optuna"  # created by migration 0006 on PostgreSQL
SORT_COLUMNS = {
    "timeCreated": SweepRow.time_created,
    "displayName": SweepRow.display_name,
    "lifecycleState": SweepRow.lifecycle_state,
}


# ---- where things live ----------------------------------------------------------------------


def sweep_dir(svc: Services, sweep_id: str) -> Path:
    """The sweep's folder (tuneforge.sweeps.SweepFolder): its dataset snapshot, results.json, the learning curve's files."""
    return svc.config.data_dir / "sweeps" / sweep_id


def study_storage_url(svc: Services) -> str:
    """Optuna's RDB storage in the service's own database: PostgreSQL's `optuna` schema (every server on
    the database shares it), or on SQLite a file beside the database file."""
    url = normalize_url(svc.config.url)
    if url.startswith("sqlite"):
        db = Path(url.split(":///", 1)[1])
        return f"sqlite:///{db.with_name(db.stem + '-optuna.db')}"
    return url + ("&" if "?" in url else "?") + f"options=-csearch_path%3D{OPTUNA_SCHEMA}"


def study_name(sweep_id: str) -> str:
    return f"tuneforge-{sweep_id}"


def caller_of(row: SweepRow) -> Caller:
    """The sweep acts for the user who created it, inside its tenancy."""
    return Caller(tenancy_id=row.tenancy_id, user_id=row.spec["createdBy"])


def spec_of(svc: Services, row: SweepRow, worker_id: str = "local", base: base_models.Base | None = None) -> SweepSpec:
    """The tuneforge.sweeps spec of a stored sweep (the CLI builds the same from its flags). Its base
    (`base`, else looked up): a catalog model, or an imported model, whose own folder the runs train."""
    s = row.spec
    if base is None:
        with svc.session() as session:
            base = base_models.base_for(session, caller_of(row), row.base_model_id, svc.region)
    model = base.spec
    method = s.get("method", data.SUPERVISED)  # "dpo": a preference-tuning sweep (DPO_TRAINING_CONFIG)
    return SweepSpec(
        method=method,
        base_model_id=model.id,
        dataset=sweep_dir(svc, row.id) / "dataset.jsonl",
        output=sweep_dir(svc, row.id),
        trials=s["trialCount"],
        search=s["searchStrategy"].lower(),
        space=space_from_json(s["searchSpace"], for_method(model, method)) if s.get("searchSpace") is not None else None,
        fixed=s.get("trainingConfig") or {},
        pruner=s["pruner"].lower(),
        weights=svc.config.weights if base.weights is None else None,
        base_weights=base.weights,
        seed=DEFAULT_SEED,  # every model of the service trains on this seed's split: the curve's scoring must use the same
        storage_url=study_storage_url(svc),
        study_name=study_name(row.id),
        worker_id=worker_id,
    )


# ---- the API shape --------------------------------------------------------------------------


def _summary_fields(row: SweepRow, region: str) -> dict[str, Any]:
    results = row.results or {}
    spec = base_models.find(row.base_model_id, region)
    return dict(
        id=row.id,
        compartment_id=row.compartment_id,
        display_name=row.display_name,
        lifecycle_state=row.lifecycle_state,
        lifecycle_details=row.lifecycle_details,
        time_created=rfc3339(row.time_created),
        time_updated=rfc3339(row.time_updated),
        base_model_id=base_models.base_ocid(spec, region) if spec else row.base_model_id,
        dedicated_ai_cluster_id=row.cluster_id,
        trial_count=row.spec["trialCount"],
        trials_finished=results.get("trialsFinished", 0),
        best_model_id=results.get("bestModelId"),
        best_validation_loss=results.get("bestValidationLoss"),
        gain_over_defaults=results.get("gainOverDefaults"),
        freeform_tags=row.freeform_tags,
        defined_tags=row.defined_tags,
    )


def to_api(row: SweepRow, region: str) -> Sweep:
    results = row.results or {}
    dataset = {k: v for k, v in row.training_dataset.items() if k != "etag"}
    return Sweep(
        **_summary_fields(row, region),
        description=row.description,
        training_dataset=dataset,
        training_config=_fixed_config(row),
        search_space=row.spec["resolvedSearchSpace"],
        search_strategy=row.spec["searchStrategy"],
        pruner=row.spec["pruner"],
        is_learning_curve_enabled=row.learning_curve is not None,
        notes=row.spec.get("notes") or None,
        best_trial_number=results.get("bestTrialNumber"),
        defaults_validation_loss=results.get("defaultsValidationLoss"),
        trials=results.get("trials", []),
        steps=results.get("steps"),
        learning_curve=LearningCurve.model_validate(row.learning_curve) if row.learning_curve else None,
        kept_model_id=row.kept_model_id,
    )


def _fixed_config(row: SweepRow) -> dict[str, Any] | None:
    """The fixed hyperparameters as given; a DPO sweep's with its trainingConfigType, which says what it is."""
    fixed = row.spec.get("trainingConfig") or {}
    if row.spec.get("method") == data.DPO:
        return {"trainingConfigType": DPO_TRAINING_CONFIG, **fixed}
    return fixed or None


def _answer(row: SweepRow, region: str, work_request_id: str | None = None) -> Answer[Sweep]:
    return Answer(to_api(row, region), etag(row.id, row.revision), work_request_id)


# ---- create ---------------------------------------------------------------------------------


def _check_cluster(session, caller: Caller, cluster_id: str) -> None:
    why = "a sweep's trials train on a FINE_TUNING cluster"
    clusters.usable(session, caller, cluster_id, "dedicatedAiClusterId", "FINE_TUNING", why)


def _dataset(svc: Services, caller: Caller, details: CreateSweepDetails, base: base_models.Base, method: str) -> tuple[Path, str]:
    """The stored dataset (checked line by line, as create_model checks it, for the sweep's `method`) and its etag."""
    ds = details.training_dataset
    where = f"{ds.namespace_name}/{ds.bucket_name}/{ds.object_name}"
    path = objects.object_path(svc, caller, ds.namespace_name, ds.bucket_name, ds.object_name)
    if path is None:
        raise invalid(f"trainingDataset: object {where} not found in your namespace; upload it with put_object first")
    stored = objects.get_object(svc, caller, ds.namespace_name, ds.bucket_name, ds.object_name)
    try:
        # Token lengths by the tokenizer of the weights the trials train: an imported model's own, else the server's.
        weights = str(base.weights) if base.weights is not None else svc.config.weights
        datasets.check(path, where, base.spec, weights, method)
    except DatasetError as err:
        hint = models.method_hint(path, method).replace("fineTuneDetails.trainingConfig.", "trainingConfig.")
        raise invalid(f"trainingDataset: {hint}{err}") from None
    return path, stored.etag


def _snapshot(source: Path, folder: Path) -> None:
    """Every trial trains on the same bytes: the sweep keeps a hard link (a copy where links fail) of
    the object as it was; the coordinator checks the object's etag before each trial's create."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "dataset.jsonl"
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def create_sweep(svc: Services, caller: Caller, details: CreateSweepDetails, retry_token: str | None = None) -> Answer[Sweep]:
    digest = idempotency.body_hash(details)
    with svc.session() as session:
        earlier = idempotency.lookup(session, caller.tenancy_id, retry_token, "CreateSweep", digest)
        if earlier is not None:
            return _answer(session.get(SweepRow, earlier.resource_id), svc.region, earlier.work_request_id)
        base = base_models.base_for(session, caller, details.base_model_id, svc.region)
        model = base.spec
        fixed = details.training_config.model_dump(by_alias=True, exclude_none=True) if details.training_config else {}
        config_type = fixed.pop("trainingConfigType", model.training_config_type)
        if config_type not in (model.training_config_type, DPO_TRAINING_CONFIG):
            raise invalid(
                f"trainingConfig.trainingConfigType: {config_type!r} is not allowed; {model.id} takes "
                f"{model.training_config_type}, or {DPO_TRAINING_CONFIG} for a preference-tuning (DPO) sweep"
            )
        method = data.DPO if config_type == DPO_TRAINING_CONFIG else data.SUPERVISED
        if method == data.DPO and details.is_learning_curve_enabled:
            # The learning curve scores its runs on supervised examples (sweeps/score.py), not on pairs.
            raise invalid(
                "isLearningCurveEnabled: the learning curve is not offered for a DPO sweep (its scoring reads "
                "supervised examples); set it to false"
            )
        _check_cluster(session, caller, details.dedicated_ai_cluster_id)
        source, object_etag = _dataset(svc, caller, details, base, method)
        sweep_id = ids.new_ocid(SWEEP_OCID, svc.region)
        folder = sweep_dir(svc, sweep_id)
        _snapshot(source, folder)
        spec = {
            "createdBy": caller.user_id,
            "trainingConfig": fixed,
            "searchSpace": None if details.search_space is None else {k: v.model_dump() for k, v in details.search_space.items()},
            "trialCount": details.trial_count,
            "searchStrategy": details.search_strategy,
            "pruner": details.pruner,
            **({"method": data.DPO} if method == data.DPO else {}),
        }
        now = utcnow()
        row = SweepRow(
            id=sweep_id,
            tenancy_id=caller.tenancy_id,
            compartment_id=details.compartment_id,
            display_name=details.display_name or "sweep" + now.strftime("%Y%m%d%H%M%S"),
            description=details.description,
            lifecycle_state="ACCEPTED",
            base_model_id=model.id,
            cluster_id=details.dedicated_ai_cluster_id,
            training_dataset={**details.training_dataset.model_dump(by_alias=True), "etag": object_etag},
            spec=spec,
            learning_curve={"status": "ACCEPTED"} if details.is_learning_curve_enabled else None,
            freeform_tags=details.freeform_tags or {},
            defined_tags=details.defined_tags or {},
            time_created=now,
            work_request_id="",
        )
        try:
            setup = prepare(spec_of(svc, row, base=base))
            make_plan(setup.n_examples, setup.defaults)  # trial 0's plan (each trial's own is checked when it is created)
            if base.weights is not None:
                _hold_imported(session, model.id)
        except TuneForgeError as err:
            shutil.rmtree(folder, ignore_errors=True)
            raise invalid(_field_path(str(err))) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        spec["resolvedSearchSpace"] = space_to_json(setup.space)
        spec["notes"] = list(setup.notes)
        session.add(row)
        session.flush()
        wr = workrequests.new_work_request(
            session,
            region=svc.region,
            tenancy_id=caller.tenancy_id,
            compartment_id=details.compartment_id,
            operation_type="CREATE_SWEEP",
            entity_type=ENTITY,
            resource_id=sweep_id,
        )
        session.flush()
        row.work_request_id = wr.id
        planned = f"{details.trial_count} trial(s)" + (" and the learning curve" if details.is_learning_curve_enabled else "")
        workrequests.log(session, wr.id, f"Accepted: a sweep of {planned} of {model.id}; waiting for a coordinator.")
        idempotency.record(session, caller.tenancy_id, retry_token, "CreateSweep", digest, sweep_id, wr.id)
        earlier = idempotency.commit_or_earlier(
            session, caller.tenancy_id, retry_token, "CreateSweep", digest, undo=lambda: shutil.rmtree(folder, ignore_errors=True)
        )
        if earlier is not None:
            return _answer(session.get(SweepRow, earlier.resource_id), svc.region, earlier.work_request_id)
        return _answer(row, svc.region, wr.id)


def _hold_imported(session, model_id: str) -> None:
    """Claim the imported base model in this transaction (imported_models.claim, as create_model does): a
    delete of it that came first fails this create; one that comes after counts this sweep and is refused."""
    try:
        imported_models.claim(session, session.get(ImportedModelRow, model_id))
    except Conflict:
        raise invalid(f"baseModelId: imported model {model_id!r} was deleted while the sweep was being created") from None


def _field_path(message: str) -> str:
    """tuneforge.sweeps names fixed hyperparameters by their own name: the API's field is trainingConfig.NAME."""
    head, sep, rest = message.partition(": ")
    return f"trainingConfig.{head}{sep}{rest}" if head in FIELD_TYPES else message


# ---- read -----------------------------------------------------------------------------------


def get_sweep(svc: Services, caller: Caller, sweep_id: str) -> Answer[Sweep]:
    with svc.session() as session:
        return _answer(owned(session, caller, SweepRow, sweep_id, "sweep"), svc.region)


def list_sweeps(
    svc: Services,
    caller: Caller,
    compartment_id: str | None,
    *,
    lifecycle_state: str | None = None,
    display_name: str | None = None,
    sweep_id: str | None = None,
    page: str | None = None,
    limit: int | None = None,
    sort_by: str | None = None,
    sort_order: str | None = None,
) -> Page[SweepSummary]:
    # (a sweep is never DELETED: listing's default "every state but DELETED" is every state)
    stmt = listing(
        SweepRow,
        caller.tenancy_id,
        compartment_id,
        lifecycle_state,
        ((SweepRow.display_name, display_name), (SweepRow.id, sweep_id)),
    )
    stmt = sorted_by(stmt, SORT_COLUMNS, sort_by, sort_order, SweepRow.id)
    with svc.session() as session:
        rows = sql_page(session, stmt, page, limit)
        return Page([SweepSummary(**_summary_fields(r, svc.region)) for r in rows.items], rows.next_page)


# ---- actions --------------------------------------------------------------------------------


def cancel_sweep(svc: Services, caller: Caller, sweep_id: str, if_match: str | None = None) -> str:
    """CANCELING; the coordinator stops the trials in training and ends the sweep CANCELED. Returns
    the sweep's work request (CANCELED once the sweep is). Asking again while it is CANCELING gets
    the same answer; a finished sweep (CANCELED included: there is nothing left to cancel) is 409."""
    return retrying(lambda: _cancel(svc, caller, sweep_id, if_match))


def _cancel(svc: Services, caller: Caller, sweep_id: str, if_match: str | None) -> str:
    with svc.session() as session:
        row = owned(session, caller, SweepRow, sweep_id, "sweep")
        check_if_match(if_match, etag(row.id, row.revision))
        if row.lifecycle_state == "CANCELING":
            return row.work_request_id
        if row.lifecycle_state == "CANCELED":
            raise incorrect_state(f"sweep {row.id} is already CANCELED")
        if row.lifecycle_state not in COORDINATED:
            raise incorrect_state(f"sweep {row.id} is {row.lifecycle_state}; only a sweep in progress can be canceled")
        row.cancel_requested, row.lifecycle_state, row.time_updated = True, "CANCELING", utcnow()
        workrequests.log(session, row.work_request_id, "Canceling: the trials in training are being stopped.")
        commit_versioned(session)
        return row.work_request_id


def request_learning_curve(svc: Services, caller: Caller, sweep_id: str, if_match: str | None = None) -> Answer[Sweep]:
    """Ask for "would more data help?" on a sweep that ran without it: back IN_PROGRESS until the curve is done."""
    return retrying(lambda: _request_learning_curve(svc, caller, sweep_id, if_match))


def _request_learning_curve(svc: Services, caller: Caller, sweep_id: str, if_match: str | None) -> Answer[Sweep]:
    with svc.session() as session:
        row = owned(session, caller, SweepRow, sweep_id, "sweep")
        check_if_match(if_match, etag(row.id, row.revision))
        if row.learning_curve is not None and row.learning_curve.get("status") != "FAILED":
            return _answer(row, svc.region)
        if row.lifecycle_state in ("CANCELING", "CANCELED"):
            raise incorrect_state(f"sweep {row.id} is {row.lifecycle_state}")
        if row.spec.get("method") == data.DPO:
            raise invalid(
                f"sweep {row.id} is a DPO sweep: the learning curve is not offered for one (its scoring reads supervised examples)"
            )
        row.learning_curve = {"status": "ACCEPTED"}
        if row.lifecycle_state in ("SUCCEEDED", "FAILED"):
            row.lifecycle_state = "IN_PROGRESS"
        row.time_updated = utcnow()
        workrequests.log(session, row.work_request_id, "The learning curve was asked for.")
        commit_versioned(session)
        return _answer(row, svc.region)


def keep_best(
    svc: Services, caller: Caller, sweep_id: str, details: KeepBestDetails, if_match: str | None = None
) -> KeepBestResult:
    """Rename the best trial's model (to `displayName`, default the sweep's) and, with
    isDeleteOthersEnabled, delete every other trial's model (one an endpoint hosts is kept and said so).
    The sweep must have finished (SUCCEEDED, CANCELED or FAILED) with a best trial. The rename and the
    sweep's keptModelId are one transaction on both versioned rows: a delete of the best model at the
    same moment either comes after it (and deletes the kept model, as asked) or makes it fail saying so."""
    best, others = retrying(lambda: _keep(svc, caller, sweep_id, details, if_match))
    deleted, kept = [], []
    for model_id in others if details.is_delete_others_enabled else []:
        try:
            models.delete_model(svc, caller, model_id)
            deleted.append(model_id)
        except ServiceError as err:  # hosted by an endpoint (409); already deleted (404) needs no word
            if err.status != 404:
                kept.append({"modelId": model_id, "reason": err.message})
    return KeepBestResult(model_id=best, deleted_model_ids=deleted, not_deleted=kept)


def _keep(svc: Services, caller: Caller, sweep_id: str, details: KeepBestDetails, if_match: str | None) -> tuple[str, list[str]]:
    """One try: the sweep's keptModelId and the best model's new name; (the best, the other trials' models)."""
    with svc.session() as session:
        row = owned(session, caller, SweepRow, sweep_id, "sweep")
        check_if_match(if_match, etag(row.id, row.revision))
        results = row.results or {}
        if row.lifecycle_state not in FINISHED:
            raise incorrect_state(
                f"sweep {row.id} is {row.lifecycle_state}; keep the best once it has finished (SUCCEEDED, CANCELED or FAILED)"
            )
        best = results.get("bestModelId")
        if not best:
            raise incorrect_state(
                f"sweep {row.id} is {row.lifecycle_state} and none of its trials finished: there is no best to keep"
            )
        model = session.get(ModelRow, best)
        if model is None or model.tenancy_id != caller.tenancy_id or model.lifecycle_state in ("DELETING", "DELETED"):
            state = "DELETED" if model is None or model.tenancy_id != caller.tenancy_id else model.lifecycle_state
            raise incorrect_state(f"sweep {row.id}: its best trial's model {best} is {state}; there is no best to keep")
        others = [t["modelId"] for t in results.get("trials", []) if t.get("modelId") and t["modelId"] != best]
        row.kept_model_id, row.time_updated = best, utcnow()
        model.display_name = details.display_name or row.display_name
        lifecycle.touch(model)
        commit_versioned(session)
        return best, others
