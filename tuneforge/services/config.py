"""What a running service needs to know: where its data lives and how jobs run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuneforge.store.db import default_url


@dataclass(frozen=True)
class ServiceConfig:
    data_dir: Path
    database_url: str | None = None  # None: SQLite file under data_dir
    weights: str | None = None  # passed to every training job as --weights ("stand-in" or a folder)
    workers: int = 1  # concurrent training jobs this process runs (0: API only)
    region: str = "local"  # appears in OCIDs
    max_attempts: int = 3  # a job whose worker died this many times fails with the last reason
    lease_seconds: float = 30.0  # a RUNNING job without a heartbeat for this long is taken over
    executor: str = "local"  # where trainers run: "local" (subprocesses of the server) or "ray" (jobs on a Ray cluster)
    ray_address: str | None = None  # the Ray cluster's job API (its dashboard), e.g. http://head:8265
    ray_gpus_per_unit: int = 1  # GPUs a cluster unit stands for when its shape names no count (H100_X8 names 8)
    ray_cpus_per_worker: float = 1.0  # CPUs (and torch threads) of each Ray Train worker
    # Hosting clusters' replicas as Ray actors: the cluster's GCS (HEAD:6379, this machine a Ray node) or
    # Ray Client's ray://HEAD:10001; None: "auto", the Ray node this machine runs (tuneforge/hosting)
    ray_hosting_address: str | None = None
    ray_cpus_per_replica: float = 1.0  # CPUs (and torch threads) each hosting replica actor reserves
    replica_timeout_s: float = 30.0  # a hosting replica that answers no ping for this long is killed and restarted
    max_pending_jobs_per_tenancy: int = 100  # more queued/running jobs than this: 429
    serving_max_batch: int = 32  # rows one decode step of the serving engine carries
    serving_max_queue: int = 256  # inference requests waiting for a row; more: 429
    serving_max_adapters: int = 8  # adapters kept loaded per base model (least recently used go first)
    serving_max_wait_s: float | None = 30.0  # expected wait for a decode row above this: 429 + Retry-After (docs/serving.md)
    models_dirs: tuple[Path, ...] = ()  # where imports look for Hugging Face models before the hub cache (tuneforge/hf_cache.py)

    @property
    def url(self) -> str:
        return self.database_url or default_url(self.data_dir)

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def imported_dir(self) -> Path:
        """Imported models' files: one immutable folder per model, named by its OCID."""
        return self.data_dir / "imported-models"
