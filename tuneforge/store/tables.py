"""The service's tables (SQLAlchemy 2 typed ORM).

API-facing rows (models, clusters, work requests) keep OCI's vocabulary; `jobs` is the queue the
workers claim from, and `metric_records` the training curves streamed from `metrics.jsonl`.
Every API resource records the tenancy that created it: that is the access boundary
(compartment OCIDs are free-form labels inside a tenancy).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC on the Python side on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class ApiKey(Base):
    __tablename__ = "api_keys"
    key_id: Mapped[str] = mapped_column(String(512), primary_key=True)  # tenancy/user/fingerprint
    tenancy_id: Mapped[str] = mapped_column(String(255), index=True)
    user_id: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    public_key_pem: Mapped[str] = mapped_column(Text)
    time_created: Mapped[datetime] = mapped_column(default=utcnow)


class BearerKey(Base):
    """An API key for the OpenAI-compatible API (`Authorization: Bearer tf-<key id>-<secret>`); only
    the secret's SHA-256 is stored: the key is shown once, when it is created."""

    __tablename__ = "bearer_keys"
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenancy_id: Mapped[str] = mapped_column(String(255), index=True)
    user_id: Mapped[str] = mapped_column(String(255))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    time_created: Mapped[datetime] = mapped_column(default=utcnow)


class OciResource:
    """Columns every OCI resource row has: identity, owner, name, lifecycle, tags, times, revision."""

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    tenancy_id: Mapped[str] = mapped_column(String(255), index=True)
    compartment_id: Mapped[str] = mapped_column(String(255), index=True)
    display_name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    lifecycle_state: Mapped[str] = mapped_column(String(32), index=True)
    lifecycle_details: Mapped[str | None] = mapped_column(Text)
    freeform_tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    defined_tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    time_created: Mapped[datetime] = mapped_column(default=utcnow)
    time_updated: Mapped[datetime | None]
    revision: Mapped[int] = mapped_column(default=1)  # the etag derives from it

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        # SQLAlchemy's optimistic concurrency: every UPDATE bumps `revision` and matches only the
        # revision that was read, so two writers holding the same etag cannot both win (the loser
        # gets StaleDataError, which the service layer answers with 412).
        return {"version_id_col": cls.__table__.c.revision}


class ModelRow(OciResource, Base):
    """A custom (fine-tuned) model. Base models come from the catalog and are never stored."""

    __tablename__ = "models"
    vendor: Mapped[str | None] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(255))
    base_model_id: Mapped[str] = mapped_column(String(255))  # catalog id, e.g. meta.llama-3.3-70b-instruct
    fine_tune_details: Mapped[dict[str, Any]]  # OCI camelCase, trainingConfig fully resolved
    model_metrics: Mapped[dict[str, Any] | None]
    system_tags: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ClusterRow(OciResource, Base):
    """A dedicated AI cluster. Here a FINE_TUNING cluster names a worker pool: at most
    `unit_count` of its jobs train at the same time."""

    __tablename__ = "dedicated_ai_clusters"
    type: Mapped[str] = mapped_column(String(32))
    unit_count: Mapped[int]
    unit_shape: Mapped[str] = mapped_column(String(64))
    capacity_reservation_id: Mapped[str | None] = mapped_column(String(255))


class EndpointRow(OciResource, Base):
    """An endpoint hosting a model (a custom model, or a catalog base model's own weights) on a
    HOSTING cluster; the serving engine answers inference requests for it."""

    __tablename__ = "endpoints"
    model_id: Mapped[str] = mapped_column(String(255), index=True)  # as given: a custom model OCID or a base model's
    base_model_id: Mapped[str] = mapped_column(String(255))  # the catalog id it runs on: one per hosting cluster
    cluster_id: Mapped[str] = mapped_column(String(255), index=True)
    private_endpoint_id: Mapped[str | None] = mapped_column(String(255))
    guardrails: Mapped[dict[str, Any]] = mapped_column(
        default=dict
    )  # contentModeration/promptInjection/piiDetection configs, as sent
    system_tags: Mapped[dict[str, Any]] = mapped_column(default=dict)


class SweepRow(OciResource, Base):
    """A hyperparameter sweep (TuneForge's own resource): an Optuna study whose trials are custom models
    trained on a FINE_TUNING cluster. One server coordinates it at a time (`owner`, renewing
    `heartbeat_at` like a job's claim); the study itself lives in Optuna's tables (services/sweeps.py)."""

    __tablename__ = "sweeps"
    base_model_id: Mapped[str] = mapped_column(String(255))  # catalog id
    cluster_id: Mapped[str] = mapped_column(String(255), index=True)
    training_dataset: Mapped[dict[str, Any]]  # OCI's ObjectStorageDataset, camelCase, plus the object's etag when created
    spec: Mapped[dict[str, Any]]  # what defines the study: fixed trainingConfig, searchSpace, trialCount, search, pruner, seed
    results: Mapped[dict[str, Any] | None]  # the coordinator's latest summary of the study (the ranked trials)
    learning_curve: Mapped[dict[str, Any] | None]  # "would more data help?": its state, models and result
    kept_model_id: Mapped[str | None] = mapped_column(String(255))
    work_request_id: Mapped[str] = mapped_column(String(255))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str | None] = mapped_column(String(255))  # the coordinating server (tuneforge.jobs.queue.this_process)
    heartbeat_at: Mapped[datetime | None]


class WorkRequestRow(Base):
    __tablename__ = "work_requests"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    tenancy_id: Mapped[str] = mapped_column(String(255), index=True)
    compartment_id: Mapped[str] = mapped_column(String(255), index=True)
    operation_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    percent_complete: Mapped[float] = mapped_column(Float, default=0.0)
    entity_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(255), index=True)
    action_type: Mapped[str] = mapped_column(String(32))
    entity_uri: Mapped[str] = mapped_column(String(512))
    time_accepted: Mapped[datetime] = mapped_column(default=utcnow)
    time_started: Mapped[datetime | None]
    time_finished: Mapped[datetime | None]
    revision: Mapped[int] = mapped_column(default=1)


class WorkRequestEntry(Base):
    """A log line (code None) or an error (code set) of a work request."""

    __tablename__ = "work_request_entries"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    work_request_id: Mapped[str] = mapped_column(ForeignKey("work_requests.id"), index=True)
    is_error: Mapped[bool] = mapped_column(Boolean, default=False)
    code: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[datetime] = mapped_column(default=utcnow)


class JobRow(Base):
    """One training run to do; the durable queue. Keyed by its CREATE_MODEL work request.

    state: QUEUED (claimable) -> RUNNING (owner heartbeats) -> DONE, and PAUSED (not claimable) between a
    pause and a resume. A RUNNING job whose owner
    stopped heartbeating (or died on this host) is claimed again and resumed from its checkpoint.
    """

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(ForeignKey("work_requests.id"), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    cluster_id: Mapped[str] = mapped_column(String(255), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    job_dir: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    owner: Mapped[str | None] = mapped_column(String(255))  # "host:pid" of the claiming server
    heartbeat_at: Mapped[datetime | None]
    # What finds the current attempt again: the trainer's pid (local executor), the Ray job's submission id (Ray).
    executor_ref: Mapped[str | None] = mapped_column(String(255))
    units: Mapped[int] = mapped_column(default=1, server_default="1")  # units of its cluster it holds while RUNNING
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    stop_reason: Mapped[str | None] = mapped_column(Text)  # set with cancel_requested: stop training (FAILED), not delete
    # Pause (the OpenAI API's): the worker stops the trainer with a checkpoint and parks the job PAUSED, which no
    # worker claims until a resume queues it again.
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_error: Mapped[str | None] = mapped_column(Text)  # why the previous attempt ended, if it crashed
    seed: Mapped[int | None]  # the run's seed (its split and data order); None: the server's (data.DEFAULT_SEED)
    metrics_offset: Mapped[int] = mapped_column(BigInteger, default=0)  # bytes of metrics.jsonl stored
    metrics_lines: Mapped[int] = mapped_column(default=0)
    progress: Mapped[dict[str, Any] | None]  # last progress.json
    time_created: Mapped[datetime] = mapped_column(default=utcnow)


class MetricRecord(Base):
    __tablename__ = "metric_records"
    __table_args__ = (UniqueConstraint("model_id", "seq"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    seq: Mapped[int]  # line number in metrics.jsonl, 0-based
    record: Mapped[dict[str, Any]]


class RetryToken(Base):
    """opc-retry-token -> the resource the first request created (kept 24 h, as OCI documents)."""

    __tablename__ = "retry_tokens"
    tenancy_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    token: Mapped[str] = mapped_column(String(255), primary_key=True)
    operation: Mapped[str] = mapped_column(String(64), primary_key=True)
    body_hash: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(255))
    work_request_id: Mapped[str | None] = mapped_column(String(255))
    time_created: Mapped[datetime] = mapped_column(default=utcnow)


class BucketRow(Base):
    __tablename__ = "buckets"
    namespace: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    tenancy_id: Mapped[str] = mapped_column(String(255), index=True)
    compartment_id: Mapped[str] = mapped_column(String(255))
    created_by: Mapped[str] = mapped_column(String(255))
    time_created: Mapped[datetime] = mapped_column(default=utcnow)


class ObjectRow(Base):
    """Object metadata; the bytes live in a file named by `storage_key` under the data dir, so no
    object name can ever reach the filesystem as a path. `etag` is the row's version: a replace
    matches only the etag it read, so concurrent if-match writers cannot both win."""

    __tablename__ = "objects"
    namespace: Mapped[str] = mapped_column(String(255), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(256), primary_key=True)
    name: Mapped[str] = mapped_column(String(1024), primary_key=True)  # at most 1024 UTF-8 bytes (checked on put)
    size: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(64))  # base64 (opc-content-md5), or "<base64>-<parts>" (opc-multipart-md5)
    etag: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(255))
    storage_key: Mapped[str] = mapped_column(String(64))
    time_created: Mapped[datetime] = mapped_column(default=utcnow)
    __mapper_args__ = {"version_id_col": etag, "version_id_generator": lambda _: secrets.token_hex(16)}

    @property
    def multipart(self) -> bool:
        return "-" in self.md5


class UploadRow(Base):
    """An open multipart upload; its parts are UploadPartRow rows whose bytes wait under the data dir."""

    __tablename__ = "multipart_uploads"
    upload_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenancy_id: Mapped[str] = mapped_column(String(255), index=True)
    namespace: Mapped[str] = mapped_column(String(255))
    bucket: Mapped[str] = mapped_column(String(256))
    name: Mapped[str] = mapped_column(String(1024))
    content_type: Mapped[str | None] = mapped_column(String(255))
    if_match: Mapped[str | None] = mapped_column(String(512))  # preconditions given at create, checked at commit
    if_none_match: Mapped[str | None] = mapped_column(String(16))
    time_created: Mapped[datetime] = mapped_column(default=utcnow)


class UploadPartRow(Base):
    __tablename__ = "multipart_upload_parts"
    upload_id: Mapped[str] = mapped_column(ForeignKey("multipart_uploads.upload_id", ondelete="CASCADE"), primary_key=True)
    part_num: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(64))
    etag: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(64))
    time_created: Mapped[datetime] = mapped_column(default=utcnow)


class ImportedModelRow(OciResource, Base):
    """A model the user brought (OCI's imported model): a Hugging Face model resolved offline from the
    operator's cache or models folders, or a folder uploaded to this server's Object Storage. Once
    ACTIVE its files sit in `weights_dir`, the server's own immutable copy under the data dir, so
    deleting the source objects later cannot change it."""

    __tablename__ = "imported_models"
    vendor: Mapped[str | None] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(255))
    capabilities: Mapped[list[Any]] = mapped_column(default=list)  # OCI's enum, e.g. ["TEXT_TO_TEXT"]
    source: Mapped[dict[str, Any]]  # OCI's dataSource, camelCase, without the accessToken (never stored)
    architecture: Mapped[str | None] = mapped_column(String(255))  # config.json's model_type (tuneforge.catalog.architectures)
    weights_dir: Mapped[str | None] = mapped_column(Text)  # set when ACTIVE
    config: Mapped[dict[str, Any] | None]  # config.json as imported
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    system_tags: Mapped[dict[str, Any]] = mapped_column(default=dict)


class OpenAIFileRow(Base):
    """A file of the OpenAI API (/openai/v1/files). Its bytes are an object in the tenancy's reserved
    bucket OPENAI_FILES_BUCKET (named by the file id), so the Object Storage API sees them too."""

    __tablename__ = "openai_files"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # file-<hex>
    tenancy_id: Mapped[str] = mapped_column(String(255), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # uploaded | processed | error (OpenAI's)
    status_details: Mapped[str | None] = mapped_column(Text)  # why a fine-tune file is `error`, every line named
    examples: Mapped[int | None]  # a processed fine-tune file's number of examples
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OpenAIJobRow(Base):
    """A fine-tuning job of the OpenAI API: the OpenAI face of a custom model (`model_id`) trained by
    the same queue as the OCI API's. Its status derives from the model and its job; what only OpenAI
    has (files, suffix, metadata, the hyperparameters as asked for) is kept here."""

    __tablename__ = "openai_fine_tuning_jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # ftjob-<hex>
    tenancy_id: Mapped[str] = mapped_column(String(255), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    base_model: Mapped[str] = mapped_column(String(255))  # as the request named it
    fine_tuned_model: Mapped[str] = mapped_column(String(512), index=True)  # ft:<base>:<org>:<suffix>:<id>
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64))
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int]
    job_metadata: Mapped[dict[str, Any] | None]  # OpenAI's `metadata` (the name is SQLAlchemy's own)
    method: Mapped[dict[str, Any]]  # OpenAI's method, every "auto" resolved
    resolution: Mapped[list[Any]] = mapped_column(default=list)  # how each "auto" was resolved: the job's first events
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    result_file: Mapped[str | None] = mapped_column(String(64))  # the step metrics CSV, once succeeded
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
