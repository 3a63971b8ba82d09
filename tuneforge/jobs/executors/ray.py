"""The Ray executor: each attempt is a Ray job on a Ray cluster, submitted through Ray's job submission
API (HTTP to the cluster's dashboard, `--ray-address http://HEAD:8265`). The job's driver
(executors/ray_job.py) runs a Ray Train TorchTrainer whose workers are the ranks of one distributed
`tuneforge train`.

A Ray job belongs to the Ray cluster, not to the server that submitted it: it outlives a killed or
stopped server, and the next server to claim the job finds it again (by the submission id kept in the
job row, or by the job id in its metadata if the server died before it could keep it) and re-attaches
instead of starting another. Deleting the model stops the Ray job.

The trainers write the job's run folder, which the server reads: the data dir must be one filesystem,
mounted at the same path, on the servers and on every Ray node (docs/scale-out.md).

A job takes all its cluster's units: `unitCount` units of `gpus_per_unit` GPUs are one worker per GPU
(or one CPU worker per unit on a Ray cluster without GPUs), so a FINE_TUNING cluster trains its jobs one
after the other, each on all its units, as OCI's do.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
import uuid

from tuneforge.errors import TuneForgeError
from tuneforge.jobs.executors import Launch
from tuneforge.jobs.executors.ray_job import RayJobSpec
from tuneforge.run_folder import ExitCode

log = logging.getLogger("tuneforge.jobs")
STATUS_EVERY_S = 2.0  # how often a running attempt's Ray job status is asked for
UNREACHABLE_GRACE_S = 300.0  # a Ray cluster that does not answer for this long has lost the attempt
METADATA_KEY = "tuneforgeJob"  # the job id, in each Ray job's metadata


def gpus_per_unit(unit_shape: str, default: int) -> int:
    """The GPUs a unit of `unit_shape` stands for: the count a GPU shape names (`H100_X8`: 8,
    `META_A100_80G_X4`: 4); `default` for the classic shapes, which name none (LARGE_GENERIC, ...)."""
    named = re.search(r"_X(\d+)$", unit_shape)
    return int(named.group(1)) if named else default


class RayAttempt:
    def __init__(self, client, submission_id: str):
        self.client, self.ref = client, submission_id
        self.where = f" as Ray job {submission_id}"
        self._code: int | None = None
        self._asked = 0.0
        self._unanswered_since: float | None = None

    def poll(self) -> int | None:
        if self._code is not None or time.monotonic() - self._asked < STATUS_EVERY_S:
            return self._code
        self._asked = time.monotonic()
        try:
            info = self.client.get_job_info(self.ref)
        except (RuntimeError, OSError) as err:  # the dashboard is restarting, or the network is out
            self._unanswered_since = self._unanswered_since or self._asked
            if self._asked - self._unanswered_since < UNREACHABLE_GRACE_S:
                log.warning("Ray job %s: no status from the Ray cluster (%s); asking again", self.ref, err)
                return None
            log.error(
                "Ray job %s: no status from the Ray cluster for %.0f s; counting the attempt as failed",
                self.ref,
                UNREACHABLE_GRACE_S,
            )
            self._code = ExitCode.CRASHED
            return self._code
        self._unanswered_since = None
        if info.status.is_terminal():
            self._code = _exit_code(info)
        return self._code

    def stop(self) -> None:
        # Ray sends the driver SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S; its workers go with it.
        try:
            self.client.stop_job(self.ref)
        except (RuntimeError, OSError) as err:
            log.warning("Ray job %s: stop request failed (%s); asking again", self.ref, err)

    kill = stop  # Ray escalates by itself


def _exit_code(info) -> int:
    if info.status == "SUCCEEDED":
        return ExitCode.OK
    if info.status == "STOPPED":
        return ExitCode.STOPPED
    return info.driver_exit_code if info.driver_exit_code not in (None, 0) else ExitCode.CRASHED


class RayExecutor:
    detached = True

    def __init__(self, address: str, gpus_per_unit: int = 1, cpus_per_worker: float = 1.0):
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError:
            raise TuneForgeError("--executor ray needs Ray on the server: pip install 'tuneforge[ray]'") from None
        try:
            self.client = JobSubmissionClient(address)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise TuneForgeError(
                f"--ray-address {address}: cannot reach a Ray cluster's job API there ({err}); "
                "give the dashboard's address, e.g. http://HEAD:8265"
            ) from None
        self.gpus_per_unit, self.cpus_per_worker = gpus_per_unit, cpus_per_worker

    def units_per_job(self, unit_count: int) -> int:
        return unit_count

    def start(self, launch: Launch) -> RayAttempt:
        spec = RayJobSpec(
            job_dir=str(launch.job_dir),
            attempt=launch.attempt,
            args=launch.args,
            units=launch.units,
            gpus_per_unit=gpus_per_unit(launch.unit_shape, self.gpus_per_unit),
            cpus_per_worker=self.cpus_per_worker,
        )
        spec_file = launch.job_dir / f"attempt-{launch.attempt}.ray.json"
        spec.write(spec_file)
        submission_id = f"tuneforge-{uuid.uuid4().hex[:12]}-{launch.attempt}"
        self.client.submit_job(
            entrypoint=shlex.join(["python", "-m", "tuneforge.jobs.executors.ray_job", str(spec_file)]),
            submission_id=submission_id,
            metadata={METADATA_KEY: launch.job_id, "attempt": str(launch.attempt)},
        )
        return RayAttempt(self.client, submission_id)

    def find(self, job_id: str, ref: str | None) -> RayAttempt | None:
        mine = [j for j in self.client.list_jobs() if (j.metadata or {}).get(METADATA_KEY) == job_id]
        running = [j for j in mine if not j.status.is_terminal()]
        if running:  # also one whose server died before it could record it
            return RayAttempt(self.client, max(running, key=lambda j: j.start_time or 0).submission_id)
        ended = [j for j in mine if j.submission_id == ref]
        return RayAttempt(self.client, ref) if ended else None
