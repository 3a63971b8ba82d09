"""The Ray job of one training attempt, run on the Ray cluster (the Ray executor submits it through Ray's
job submission API): a Ray Train TorchTrainer whose workers are the ranks of one distributed
`tuneforge train`.

Each worker starts the engine as the local executor does, `python -m tuneforge train ...` through the
launcher, with the variables torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK,
MASTER_ADDR, MASTER_PORT), so the engine runs in its distributed mode (FSDP2 over the ranks), writes the
job's run folder from rank 0 and ends with one of its exit codes. Why a subprocess and not the engine in
the Ray worker itself: the service/engine contract is the CLI, its exit codes and the run folder, and Ray
runs the training function in a thread while the engine's stop handling needs a main thread. The trainers
form a process group of their own, on a port rank 0 picks; the (gloo) group Ray Train sets up between its
workers only carries that port to them.

Layout: the job's `units` units of `gpus_per_unit` GPUs each, one worker per GPU; on a Ray cluster without
GPUs, one CPU worker per unit. Each worker gets `cpus_per_worker` CPUs (and as many torch threads).

The Ray job ends with the trainers' combined exit code (Ray records it as the driver's exit code); each
rank's stdout/stderr are in the job folder (`attempt-N.rank-R.stderr`).

Usage: python -m tuneforge.jobs.executors.ray_job SPEC.json   (the spec is written by the Ray executor)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from tuneforge.jobs.command import log_file
from tuneforge.run_folder import ExitCode, write_json_atomic
from tuneforge.train_command import launched


@dataclass(frozen=True)
class RayJobSpec:
    """What the Ray job runs: written by the executor into the job folder, read by the job's driver."""

    job_dir: str
    attempt: int
    args: list[str]  # `tuneforge train ...`
    units: int
    gpus_per_unit: int
    cpus_per_worker: float

    def write(self, path: Path) -> None:
        write_json_atomic(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> RayJobSpec:
        return cls(**json.loads(path.read_text()))


class TrainerExit(Exception):
    """A rank's trainer ended with another code than OK; Ray Train then stops the other ranks."""

    def __init__(self, code: int):
        super().__init__(f"the trainer exited with code {code}")
        self.code = code

    def __reduce__(self):
        return TrainerExit, (self.code,)


def main(argv: list[str]) -> int:
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer

    spec = RayJobSpec.read(Path(argv[0]))
    ray.init()  # the cluster Ray's job supervisor started us on (RAY_ADDRESS)
    use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    workers = spec.units * spec.gpus_per_unit if use_gpu else spec.units
    print(f"tuneforge: attempt {spec.attempt} on {workers} {'GPU' if use_gpu else 'CPU'} worker(s)", flush=True)
    trainer = TorchTrainer(
        run_rank,
        train_loop_config=asdict(spec),
        torch_config=TorchConfig(backend="gloo"),  # only carries the trainers' rendezvous port
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": spec.cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        # No retries inside Ray: a failed attempt goes back to the service's queue, which counts attempts.
        run_config=RunConfig(
            name=f"attempt-{spec.attempt}",
            storage_path=str(Path(spec.job_dir) / "ray"),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    try:
        trainer.fit()
    except TrainingFailedError as err:
        return _exit_code(err)
    return ExitCode.OK


def _exit_code(err: Exception) -> int:
    """The ranks' exit codes as one (a rank Ray stopped because another failed reports nothing)."""
    from tuneforge.engine.launch import combined_exit_code

    failures = getattr(err, "worker_failures", None) or {}
    causes = [getattr(failure, "cause", failure) for failure in failures.values()]
    codes = [cause.code for cause in causes if isinstance(cause, TrainerExit)]
    return combined_exit_code(codes) if codes else ExitCode.CRASHED


def run_rank(config: dict) -> None:
    """One Ray Train worker: this rank's trainer, as a subprocess that dies with the worker."""
    import ray
    import ray.train
    import torch.distributed as dist

    spec = RayJobSpec(**config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    host = ray.util.get_node_ip_address()
    rendezvous = [host, _free_port(host)] if rank == 0 else [None, None]
    if world > 1:
        dist.broadcast_object_list(rendezvous, src=0)
    env = os.environ | {
        "RANK": str(rank),
        "LOCAL_RANK": str(ctx.get_local_rank()),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(ctx.get_local_world_size()),
        "GROUP_RANK": str(ctx.get_node_rank()),
        "MASTER_ADDR": rendezvous[0],
        "MASTER_PORT": str(rendezvous[1]),
    }
    job_dir = Path(spec.job_dir)
    args = [*spec.args, "--threads", str(max(1, int(spec.cpus_per_worker)))]
    stdout, stderr = (log_file(job_dir, spec.attempt, stream, rank) for stream in ("stdout", "stderr"))
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(
            launched(args, os.getpid(), death_signal="KILL"),
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=job_dir,
        )
    code = proc.wait()
    if code != ExitCode.OK:
        raise TrainerExit(code)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
