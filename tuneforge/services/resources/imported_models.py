"""Imported models (OCI's `/20231130/importedModels`): a model the user brings, from the operator's
Hugging Face cache or models folders (HUGGING_FACE_MODEL, resolved offline by tuneforge/hf_cache.py)
or from a folder uploaded to this server's Object Storage (OBJECT_STORAGE_OBJECT: a prefix, as
`oci os object bulk-upload --src-dir MODEL --prefix p/` writes it).

A create checks what it can at once (the source's syntax, the namespace, bucket and region) and
answers CREATING with a CREATE_IMPORTED_MODEL work request; the import itself runs in a background
thread (`run_import`; a restarted server runs the unfinished ones again): it gathers the folder's
top-level files into a staging folder under the data dir (hard links to the Object Storage blobs and
the hub cache's blobs, which are never written in place; copies of a plain folder's files, which may
be), checks them all (tuneforge/model_folder.py) and either renames the staging folder to the model's
own immutable folder (ACTIVE) or removes it (FAILED, with every problem in lifecycleDetails and as
work request errors). Deleting the source objects afterwards changes nothing: the model's folder holds
its own links to the bytes.

`accessToken` is accepted because the SDK sends it and is never stored, echoed or logged: the schema
holds it as a SecretStr and the stored source leaves it out. Nothing here reaches the network.

For the modules that use an imported model as a base (fine-tunes, endpoints): `is_imported_id`,
`active` (the ACTIVE row, or a 400 naming the field), `claim` (in the transaction that creates
something that uses the model, so a delete cannot slip between) and `weights_folder`.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from tuneforge import catalog, hf_cache, model_folder
from tuneforge.errors import InvalidParameter, TuneForgeError
from tuneforge.services import idempotency, tenancy
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import incorrect_state, invalid, not_found
from tuneforge.services.protocol import Answer, Page, check_if_match, etag, listing, rfc3339, sorted_by, sql_page
from tuneforge.services.schemas.imported_models import (
    CreateImportedModelDetails,
    HuggingFaceModel,
    ImportedModel,
    ImportedModelSummary,
    ObjectStorageObject,
    UpdateImportedModelDetails,
)
from tuneforge.services.tenancy import owned
from tuneforge.services.transactions import Conflict, commit_versioned, retrying
from tuneforge.store import ids, objects, workrequests
from tuneforge.store.tables import (
    BucketRow,
    EndpointRow,
    ImportedModelRow,
    ModelRow,
    ObjectRow,
    SweepRow,
    WorkRequestRow,
    utcnow,
)

log = logging.getLogger("tuneforge.imports")

ENTITY = "GenerativeAiImportedModel"
STATES = ("ACTIVE", "CREATING", "UPDATING", "DELETING", "DELETED", "FAILED")
SORT_COLUMNS = {
    "timeCreated": ImportedModelRow.time_created,
    "displayName": ImportedModelRow.display_name,
    "lifecycleState": ImportedModelRow.lifecycle_state,
}
# TuneForge trains and serves text decoders: an imported model answers text with text.
CAPABILITIES = ["TEXT_TO_TEXT"]
# What keeps an imported model from deletion: a fine-tune training on it or served on it, an endpoint
# hosting it, a sweep that may still create trials on it.
MODEL_USING = ("CREATING", "ACTIVE", "DELETING")
ENDPOINT_USING = ("CREATING", "ACTIVE", "UPDATING")
SWEEP_USING = ("ACCEPTED", "IN_PROGRESS", "CANCELING")


def is_imported_id(ref: str) -> bool:
    """Whether `ref` is an imported model's OCID (what a baseModelId or modelId may name)."""
    return ref.startswith(f"ocid1.{ids.IMPORTED_MODEL}.")


def active(session: Session, caller: Caller, model_id: str, field: str) -> ImportedModelRow:
    """The caller's ACTIVE imported model that a request names in `field`, else 400 naming the field
    (another tenancy's model is "no imported model", as if it did not exist)."""
    row = session.get(ImportedModelRow, model_id)
    if row is None or row.tenancy_id != caller.tenancy_id or row.lifecycle_state == "DELETED":
        raise invalid(f"{field}: no imported model {model_id!r} in your tenancy")
    if row.lifecycle_state != "ACTIVE":
        why = f" ({row.lifecycle_details})" if row.lifecycle_state == "FAILED" and row.lifecycle_details else ""
        raise invalid(f"{field}: imported model {model_id!r} is {row.lifecycle_state}{why}; only an ACTIVE one can be used")
    return row


def claim(session: Session, row: ImportedModelRow) -> None:
    """Move the imported model's revision in the caller's transaction, only while it is ACTIVE at the
    revision read: a delete that read it before fails its versioned UPDATE and runs again (then finding
    what the caller created), and a delete that committed first makes the caller's transaction run
    again (raises Conflict, for `retrying`), where `active` refuses the DELETED model."""
    moved = session.execute(
        update(ImportedModelRow)
        .where(
            ImportedModelRow.id == row.id,
            ImportedModelRow.revision == row.revision,
            ImportedModelRow.lifecycle_state == "ACTIVE",
        )
        .values(revision=ImportedModelRow.revision + 1)
        .execution_options(synchronize_session="fetch")
    ).rowcount
    if not moved:
        raise Conflict


def weights_folder(row: ImportedModelRow) -> Path:
    """The ACTIVE imported model's own folder (config.json, safetensors, tokenizer), under the data dir."""
    if row.weights_dir is None:
        raise incorrect_state(f"imported model {row.id} is {row.lifecycle_state}: it has no weights on this server")
    return Path(row.weights_dir)


def to_api(row: ImportedModelRow) -> ImportedModel:
    return ImportedModel(
        id=row.id,
        compartment_id=row.compartment_id,
        capabilities=row.capabilities,
        lifecycle_state=row.lifecycle_state,
        lifecycle_details=row.lifecycle_details,
        display_name=row.display_name,
        description=row.description,
        vendor=row.vendor,
        version=row.version,
        data_source=row.source,
        time_created=rfc3339(row.time_created),
        time_updated=rfc3339(row.time_updated),
        freeform_tags=row.freeform_tags,
        defined_tags=row.defined_tags,
        system_tags=row.system_tags,
    )


def summary(model: ImportedModel) -> ImportedModelSummary:
    return ImportedModelSummary(**model.model_dump())


def _answer(row: ImportedModelRow, work_request_id: str | None = None) -> Answer[ImportedModel]:
    return Answer(to_api(row), etag(row.id, row.revision), work_request_id)


# ---- create ---------------------------------------------------------------------------------


def _folder_prefix(prefix: str | None) -> str:
    """The prefix as a folder: "p" and "p/" both name the objects p/<file> (what bulk-upload --prefix p/ writes)."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _check_source(svc: Services, session: Session, caller: Caller, source) -> None:
    """400 naming the field for what can be known at once; the rest is the import's to find."""
    if isinstance(source, HuggingFaceModel):
        problems = hf_cache.check_reference(source.model_id, source.branch, source.commit)
        if problems:
            raise invalid("; ".join(f"dataSource.{p}" for p in problems))
        return
    if source.region is not None and source.region != svc.region:
        raise invalid(
            f"dataSource.region: {source.region[:100]!r} is not allowed; it must be this server's region "
            f"{svc.region!r} (or left out): TuneForge imports from its own Object Storage"
        )
    if source.namespace_name != objects.namespace_for(caller.tenancy_id):
        raise invalid(
            f"dataSource.namespaceName: {source.namespace_name[:100]!r} is not your namespace; it must be "
            f"{objects.namespace_for(caller.tenancy_id)!r} (get_namespace)"
        )
    bucket = session.get(BucketRow, (source.namespace_name, source.bucket_name))
    if bucket is None:
        raise invalid(f"dataSource.bucketName: no bucket {source.bucket_name[:256]!r} in namespace {source.namespace_name!r}")
    if source.prefix_name and (source.prefix_name.startswith("/") or "\x00" in source.prefix_name):
        raise invalid(f"dataSource.prefixName: {source.prefix_name[:200]!r} is not an object name prefix")


def _default_vendor(source) -> str | None:
    if isinstance(source, HuggingFaceModel) and "/" in source.model_id:
        return source.model_id.split("/", 1)[0].lower()  # the hub owner: meta-llama, qwen, mistralai, ...
    return None


def create_imported_model(
    svc: Services,
    caller: Caller,
    details: CreateImportedModelDetails,
    retry_token: str | None = None,
    *,
    background: bool = True,
) -> Answer[ImportedModel]:
    """Check the source, then import it in the background; the ImportedModel starts CREATING.
    background=False: the caller runs the import (`run_import`; the CLI, which waits for it)."""
    digest = idempotency.body_hash(details)
    unsupported = [c for c in details.capabilities or () if c not in CAPABILITIES]
    if unsupported:
        raise invalid(
            f"capabilities: {', '.join(unsupported)} not allowed; TuneForge imports text decoder models: "
            f"{', '.join(CAPABILITIES)} only"
        )
    with svc.session() as session:
        earlier = idempotency.lookup(session, caller.tenancy_id, retry_token, "CreateImportedModel", digest)
        if earlier is not None:
            return _answer(session.get(ImportedModelRow, earlier.resource_id), earlier.work_request_id)
        source = details.data_source
        _check_source(svc, session, caller, source)
        stored = source.model_dump(by_alias=True, exclude_none=True, exclude={"access_token"})
        if isinstance(source, ObjectStorageObject):
            stored["region"] = svc.region
        now = utcnow()
        row = ImportedModelRow(
            id=ids.new_ocid(ids.IMPORTED_MODEL, svc.region),
            tenancy_id=caller.tenancy_id,
            compartment_id=details.compartment_id,
            display_name=details.display_name or "importedmodel" + now.strftime("%Y%m%d%H%M%S"),
            description=details.description,
            vendor=details.vendor or _default_vendor(source),
            version=details.version,
            capabilities=list(details.capabilities or CAPABILITIES),
            source=stored,
            lifecycle_state="CREATING",
            freeform_tags=details.freeform_tags or {},
            defined_tags=details.defined_tags or {},
            system_tags={},
            time_created=now,
        )
        session.add(row)
        session.flush()
        wr = workrequests.new_work_request(
            session,
            region=svc.region,
            tenancy_id=caller.tenancy_id,
            compartment_id=details.compartment_id,
            operation_type="CREATE_IMPORTED_MODEL",
            entity_type=ENTITY,
            resource_id=row.id,
        )
        session.flush()  # the work request's row before its first log line (a foreign key)
        workrequests.log(session, wr.id, f"Accepted: import {describe_source(stored)}.")
        idempotency.record(session, caller.tenancy_id, retry_token, "CreateImportedModel", digest, row.id, wr.id)
        earlier = idempotency.commit_or_earlier(session, caller.tenancy_id, retry_token, "CreateImportedModel", digest)
        if earlier is not None:
            return _answer(session.get(ImportedModelRow, earlier.resource_id), earlier.work_request_id)
        answer = _answer(row, wr.id)
    if background:
        start_import(svc, row.id)
    return answer


def describe_source(source: dict) -> str:
    if source.get("sourceType") == "HUGGING_FACE_MODEL":
        at = f" at commit {source['commit']}" if source.get("commit") else f" on branch {source.get('branch', 'main')}"
        return f"Hugging Face model {source['modelId']}{at}"
    prefix = source.get("prefixName") or ""
    return f"the objects under {prefix!r} in bucket {source['bucketName']}" if prefix else f"bucket {source['bucketName']}"


# ---- the import (background) ----------------------------------------------------------------


class ImportFailed(TuneForgeError):
    """The source cannot be gathered; the message is for the user (no server path)."""


@dataclass(frozen=True)
class SourceFile:
    name: str  # relative to the model folder: a plain file name
    path: Path
    linkable: bool  # never written in place (an object's blob, a hub cache blob): a hard link is a snapshot


def start_import(svc: Services, model_id: str) -> None:
    threading.Thread(target=run_import, args=(svc, model_id), name=f"import-{model_id[-8:]}", daemon=True).start()


def resume(svc: Services) -> None:
    """Run again the imports a stopped server left CREATING, and remove the staging folders of imports that
    ended (a CREATING one's may be another server's, still at work)."""
    with svc.session() as session:
        creating = list(session.scalars(select(ImportedModelRow.id).where(ImportedModelRow.lifecycle_state == "CREATING")))
    if svc.config.imported_dir.is_dir():
        for folder in svc.config.imported_dir.glob(".staging-*"):
            if not any(folder.name.startswith(f".staging-{model_id}-") for model_id in creating):
                shutil.rmtree(folder, ignore_errors=True)
    for model_id in creating:
        start_import(svc, model_id)


def _create_request(session: Session, model_id: str) -> WorkRequestRow | None:
    return session.scalars(
        select(WorkRequestRow)
        .where(WorkRequestRow.resource_id == model_id, WorkRequestRow.operation_type == "CREATE_IMPORTED_MODEL")
        .order_by(WorkRequestRow.time_accepted.desc())
    ).first()


def run_import(svc: Services, model_id: str) -> model_folder.FolderReport | None:
    """Gather, check and keep (ACTIVE) or discard (FAILED) one CREATING import; the folder's report."""
    with svc.session() as session:
        row = session.get(ImportedModelRow, model_id)
        if row is None or row.lifecycle_state != "CREATING":
            return None
        caller, source = Caller(row.tenancy_id, "tuneforge-import"), dict(row.source)
        wr = _create_request(session, model_id)
        if wr is not None:
            wr.status, wr.time_started, wr.percent_complete = "IN_PROGRESS", utcnow(), 10.0
            workrequests.log(session, wr.id, f"Gathering the files of {describe_source(source)}.")
        session.commit()
    svc.config.imported_dir.mkdir(parents=True, exist_ok=True)
    staging = svc.config.imported_dir / f".staging-{model_id}-{secrets.token_hex(4)}"
    final = svc.config.imported_dir / model_id
    report, problems, notes = None, [], []
    try:
        files, notes = _source_files(svc, caller, source)
        _gather(files, staging)
        report = model_folder.check(staging)
        problems = list(report.problems)
        if report.ok:
            problems += spec_problems(model_id, report)
        if not problems:
            _publish(staging, final)
    except ImportFailed as err:
        problems = [str(err)]
    except Exception:
        log.exception("importing %s failed", model_id)
        problems = ["the import failed on the server; the server's log has the details"]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kept = retrying(lambda: _finish(svc, model_id, report, problems, notes, final if not problems else None))
    if not problems and not kept:  # deleted while it was being imported
        shutil.rmtree(final, ignore_errors=True)
    return report


def _publish(staging: Path, final: Path) -> None:
    """Rename the checked staging folder to the model's folder. One left by an attempt that died before
    recording its result (or written by another server running the same import after a restart) is
    replaced: it holds the same files."""
    try:
        os.rename(staging, final)
    except OSError:
        if not final.is_dir():
            raise
        trash = final.with_name(f".trash-{final.name}-{secrets.token_hex(4)}")
        os.rename(final, trash)
        os.rename(staging, final)
        shutil.rmtree(trash, ignore_errors=True)


def spec_problems(model_id: str, report: model_folder.FolderReport) -> list[str]:
    """What the catalog needs beyond the folder check to fine-tune it (its context length, ...)."""
    try:
        catalog.spec_for_config(model_id, model_id, None, report.config)
    except InvalidParameter as err:
        return [str(err.allowed).removeprefix("its config.json cannot be fine-tuned: ")]
    return []


def _finish(
    svc: Services,
    model_id: str,
    report: model_folder.FolderReport | None,
    problems: list[str],
    notes: list[str],
    folder: Path | None,
) -> bool:
    """CREATING -> ACTIVE (with the folder) or FAILED (every problem); False when the model is no longer
    CREATING (deleted meanwhile: the caller removes the folder)."""
    with svc.session() as session:
        row = session.get(ImportedModelRow, model_id)
        wr = _create_request(session, model_id)
        if row is None or row.lifecycle_state != "CREATING":
            if wr is not None and wr.status in ("ACCEPTED", "IN_PROGRESS"):
                workrequests.log(session, wr.id, "The imported model was deleted while it was being imported.")
                workrequests.finish(session, wr, "CANCELED")
                session.commit()
            return False
        for line in (report.notes if report else []) + notes:
            if wr is not None:
                workrequests.log(session, wr.id, line)
        if report is not None and report.config is not None:
            row.config, row.size_bytes = report.config, report.size_bytes
            row.architecture = report.model_type
        row.time_updated = utcnow()
        if problems:
            row.lifecycle_state = "FAILED"
            row.lifecycle_details = (
                report.describe() if report is not None and report.problems == problems else "; ".join(problems)
            )
            if wr is not None:
                for problem in problems:
                    workrequests.error(session, wr.id, "ImportFailed", problem)
                workrequests.log(session, wr.id, f"Import failed: {len(problems)} problem(s); nothing was kept.")
                workrequests.finish(session, wr, "FAILED")
        else:
            row.lifecycle_state, row.lifecycle_details, row.weights_dir = "ACTIVE", None, str(folder)
            row.system_tags = {
                "tuneforge": {
                    "architecture": report.model_type,
                    "parameters": report.parameters,
                    "dtype": report.dtype,
                    "sizeBytes": report.size_bytes,
                }
            }
            if wr is not None:
                workrequests.log(session, wr.id, "Import succeeded: the model is ACTIVE.")
                workrequests.finish(session, wr, "SUCCEEDED")
        commit_versioned(session)
        return True


def _source_files(svc: Services, caller: Caller, source: dict) -> tuple[list[SourceFile], list[str]]:
    """The model folder's files (top level only: transformers reads nothing below it) and notes on
    what was left out."""
    if source["sourceType"] == "HUGGING_FACE_MODEL":
        roots = hf_cache.search_roots(svc.config.models_dirs)
        try:
            found = hf_cache.resolve(source["modelId"], source.get("branch"), source.get("commit"), roots)
        except hf_cache.ModelNotFound as err:
            raise ImportFailed(err.without_paths()) from None
        except TuneForgeError as err:
            raise ImportFailed(str(err)) from None
        return _folder_files(found)
    return _object_files(svc, caller, source)


def _folder_files(found: hf_cache.Found) -> tuple[list[SourceFile], list[str]]:
    files, skipped = [], []
    for entry in sorted(found.path.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            skipped.append(entry.name + "/")
            continue
        target = entry.resolve()  # a snapshot's files are symlinks to the cache's blobs
        if target.is_file():
            files.append(SourceFile(entry.name, target, linkable=found.layout == "hub cache"))
    where = f"commit {found.commit}" if found.commit else "a models folder"
    notes = [f"Found in the server's {found.layout} ({where}): {len(files)} file(s)."]
    if skipped:
        notes.append(f"Left out (subfolders; a model folder is read from its top level): {', '.join(skipped)}")
    return files, notes


def _object_files(svc: Services, caller: Caller, source: dict) -> tuple[list[SourceFile], list[str]]:
    prefix = _folder_prefix(source.get("prefixName"))
    files, skipped = [], []
    with svc.session() as session:
        stmt = select(ObjectRow).where(ObjectRow.namespace == source["namespaceName"], ObjectRow.bucket == source["bucketName"])
        if prefix:
            stmt = stmt.where(ObjectRow.name.startswith(prefix, autoescape=True))
        for obj in session.scalars(stmt.order_by(ObjectRow.name)):
            name = obj.name[len(prefix) :]
            if "/" in name:
                skipped.append(prefix + name.split("/", 1)[0] + "/")
            elif name and not name.startswith("."):
                files.append(SourceFile(name, objects.blob_path(svc.config.objects_dir, obj.storage_key), linkable=True))
    if not files:
        where = f"under prefix {prefix!r} " if prefix else ""
        raise ImportFailed(
            f"no objects {where}in bucket {source['bucketName']}: upload the model folder with "
            f"`oci os object bulk-upload --bucket-name {source['bucketName']} --src-dir MODEL --prefix {prefix or 'PREFIX/'}`"
        )
    notes = [f"Found {len(files)} object(s) under {prefix or 'the bucket'}."]
    if skipped:
        notes.append(f"Left out (below a further '/'): {', '.join(sorted(set(skipped)))}")
    return files, notes


def _gather(files: list[SourceFile], staging: Path) -> None:
    copies = sum(f.path.stat().st_size for f in files if not f.linkable and f.path.exists())
    free = shutil.disk_usage(staging.parent).free
    if copies > free:
        raise ImportFailed(f"the server has {free:,} bytes of disk free for its copy of the model; it needs {copies:,}")
    staging.mkdir(parents=True)
    for f in files:
        target = staging / f.name
        try:
            if f.linkable:
                try:
                    os.link(f.path, target)
                    continue
                except OSError:  # another filesystem, or links not allowed: a copy is a snapshot too
                    pass
            shutil.copyfile(f.path, target)
        except FileNotFoundError:
            raise ImportFailed(f"{f.name} disappeared while it was being imported (deleted or replaced); import again") from None
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            raise ImportFailed(f"the server ran out of disk space while copying {f.name}; nothing was kept") from None


# ---- read -----------------------------------------------------------------------------------


def get_imported_model(svc: Services, caller: Caller, model_id: str) -> Answer[ImportedModel]:
    with svc.session() as session:
        return _answer(owned(session, caller, ImportedModelRow, model_id, "imported model"))


def list_imported_models(
    svc: Services,
    caller: Caller,
    compartment_id: str | None,
    *,
    vendor: str | None = None,
    capability: list[str] | None = None,
    lifecycle_state: str | None = None,
    display_name: str | None = None,
    model_id: str | None = None,
    page: str | None = None,
    limit: int | None = None,
    sort_by: str | None = None,
    sort_order: str | None = None,
) -> Page[ImportedModel]:
    """DELETED ones only when asked for with lifecycle_state="DELETED"; compartment_id None: every compartment."""
    filters = (
        (ImportedModelRow.vendor, vendor),
        (ImportedModelRow.display_name, display_name),
        (ImportedModelRow.id, model_id),
    )
    stmt = listing(ImportedModelRow, caller.tenancy_id, compartment_id, lifecycle_state, filters)
    if capability and not set(capability) & set(CAPABILITIES):
        return Page([])  # every imported model here is TEXT_TO_TEXT
    stmt = sorted_by(stmt, SORT_COLUMNS, sort_by, sort_order, ImportedModelRow.id)
    with svc.session() as session:
        rows = sql_page(session, stmt, page, limit)
        return Page([to_api(r) for r in rows.items], rows.next_page)


def active_rows(svc: Services, caller: Caller) -> list[ImportedModelRow]:
    """The tenancy's ACTIVE imported models (every compartment), oldest first (model discovery, the CLI)."""
    with svc.session() as session:
        stmt = (
            select(ImportedModelRow)
            .where(ImportedModelRow.tenancy_id == caller.tenancy_id, ImportedModelRow.lifecycle_state == "ACTIVE")
            .order_by(ImportedModelRow.time_created, ImportedModelRow.id)
        )
        rows = list(session.scalars(stmt))
        session.expunge_all()
        return rows


# ---- update / move / delete -----------------------------------------------------------------


def update_imported_model(
    svc: Services, caller: Caller, model_id: str, details: UpdateImportedModelDetails, if_match: str | None = None
) -> Answer[ImportedModel]:
    return retrying(lambda: _update(svc, caller, model_id, details, if_match))


def _update(
    svc: Services, caller: Caller, model_id: str, details: UpdateImportedModelDetails, if_match: str | None
) -> Answer[ImportedModel]:
    with svc.session() as session:
        row = owned(session, caller, ImportedModelRow, model_id, "imported model")
        check_if_match(if_match, etag(row.id, row.revision))
        if row.lifecycle_state in ("DELETING", "DELETED"):
            raise incorrect_state(f"imported model {row.id} is {row.lifecycle_state}")
        for field in details.model_fields_set:
            value = getattr(details, field)
            if value is not None:
                setattr(row, field, value)
        row.time_updated = utcnow()
        commit_versioned(session)
        return _answer(row)


def change_compartment(svc: Services, caller: Caller, model_id: str, compartment_id: str, if_match: str | None = None) -> None:
    tenancy.change_compartment(svc, caller, ImportedModelRow, model_id, "imported model", compartment_id, if_match)


def users(session: Session, model_id: str) -> str | None:
    """What uses an imported model, in words ("2 fine-tuned model(s) (ocid1..., ...)"), or None."""
    found = []
    for table, names_it, states, what in (
        (ModelRow, ModelRow.base_model_id == model_id, MODEL_USING, "fine-tuned model(s)"),
        # An endpoint hosts the imported model itself (modelId) or a fine-tune of it (its base).
        (
            EndpointRow,
            or_(EndpointRow.base_model_id == model_id, EndpointRow.model_id == model_id),
            ENDPOINT_USING,
            "endpoint(s)",
        ),
        (SweepRow, SweepRow.base_model_id == model_id, SWEEP_USING, "sweep(s)"),
    ):
        where = (names_it, table.lifecycle_state.in_(states))
        count = session.scalar(select(func.count()).select_from(table).where(*where))
        if count:
            some = list(session.scalars(select(table.id).where(*where).order_by(table.id).limit(3)))
            found.append(f"{count} {what} ({', '.join(some)}{', ...' if count > 3 else ''})")
    return "; ".join(found) or None


def delete_imported_model(svc: Services, caller: Caller, model_id: str, if_match: str | None = None) -> str:
    """DELETED at once, its folder removed; the DELETE_IMPORTED_MODEL work request's id. 409 while a
    fine-tune, an endpoint or a sweep uses it (`users`): the count and this versioned UPDATE are one
    transaction, and whatever starts using the model moves its revision in its own (`claim`)."""
    wr_id, remove = retrying(lambda: _delete(svc, caller, model_id, if_match))
    if remove is not None:
        shutil.rmtree(remove, ignore_errors=True)
    return wr_id


def _delete(svc: Services, caller: Caller, model_id: str, if_match: str | None) -> tuple[str, Path | None]:
    with svc.session() as session:
        row = owned(session, caller, ImportedModelRow, model_id, "imported model")
        check_if_match(if_match, etag(row.id, row.revision))
        if row.lifecycle_state == "DELETED":
            raise not_found("imported model")
        in_use = users(session, row.id)
        if in_use:
            raise incorrect_state(f"imported model {row.id} is in use by {in_use}; delete them first")
        remove = Path(row.weights_dir) if row.weights_dir else None
        row.lifecycle_state, row.weights_dir, row.time_updated = "DELETED", None, utcnow()
        wr = workrequests.new_work_request(
            session,
            region=svc.region,
            tenancy_id=row.tenancy_id,
            compartment_id=row.compartment_id,
            operation_type="DELETE_IMPORTED_MODEL",
            entity_type=ENTITY,
            resource_id=row.id,
            done=True,
        )
        commit_versioned(session)
        return wr.id, remove
