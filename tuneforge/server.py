"""`tuneforge serve`: one process with the API and the worker threads over one store; the trainers run
where the executor puts them (subprocesses of this process, or jobs on a Ray cluster)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable

from tuneforge.errors import TuneForgeError
from tuneforge.jobs.executors import Executor
from tuneforge.services.config import ServiceConfig


def executor(config: ServiceConfig) -> Executor:
    """The executor `--executor` names (a bad Ray address fails here, before the server starts)."""
    if config.executor == "ray":
        from tuneforge.jobs.executors.ray import RayExecutor

        if not config.ray_address:
            raise TuneForgeError("--executor ray needs --ray-address: the Ray cluster's dashboard, e.g. http://HEAD:8265")
        return RayExecutor(config.ray_address, gpus_per_unit=config.ray_gpus_per_unit, cpus_per_worker=config.ray_cpus_per_worker)
    from tuneforge.jobs.executors.local import LocalExecutor

    # Each job gets its share of the cores: two trainers whose thread pools both span every core
    # spend most of their time waiting at each other's barriers.
    return LocalExecutor(threads=max(1, (os.cpu_count() or 1) // config.workers) if config.workers > 1 else None)


def serve(config: ServiceConfig, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    from tuneforge.api.app import create_app
    from tuneforge.data import DEFAULT_SEED
    from tuneforge.jobs.runner import RunSettings
    from tuneforge.jobs.worker import WorkerPool
    from tuneforge.services.actions import inference
    from tuneforge.services.background.sweep_coordinator import SweepCoordinator
    from tuneforge.services.context import Services
    from tuneforge.services.resources import endpoints, imported_models
    from tuneforge.store.db import open_store

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    sessions = open_store(config.url)  # applies migrations
    settings = RunSettings(weights=config.weights, max_attempts=config.max_attempts, seed=DEFAULT_SEED)
    pool = WorkerPool(sessions, settings, executor(config), workers=config.workers, lease_seconds=config.lease_seconds)
    services = Services(config, sessions, wake_workers=pool.wake)
    services.warm_endpoint = lambda endpoint_id: inference.warm_endpoint(services, endpoint_id)
    app = create_app(services)
    pool.start()
    coordinator = SweepCoordinator(services, lease_seconds=config.lease_seconds)  # sweeps: one server coordinates each
    coordinator.start()
    for endpoint_id in endpoints.creating(services):  # a restart while an endpoint was loading: load it again
        services.warm_endpoint(endpoint_id)
    imported_models.resume(services)  # a restart while a model was being imported: import it again

    @functools.cache  # once: when uvicorn has stopped serving, or when it failed to start
    def shut_down() -> None:
        coordinator.stop()
        pool.stop()
        if services.serving is not None:
            services.serving.shutdown()
        if services.hosting is not None:  # the hosting clusters' replicas: their requests end, they stop
            services.hosting.shutdown()

    try:
        # h11 (not httptools): it bounds the header block it buffers (64 KiB), so no client can make it hold more.
        server_config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            proxy_headers=True,
            http="h11",
            h11_max_incomplete_event_size=64 * 1024,
            # Clients (the SDKs' connection pools, a script polling every few seconds) reuse idle
            # connections: at uvicorn's default of 5 s a request sent as the server closes one is reset.
            timeout_keep_alive=75,
        )
        _uvicorn_server(server_config, shut_down).run()
    finally:
        shut_down()


def _uvicorn_server(config, shut_down: Callable[[], None]):
    """uvicorn handles SIGINT/SIGTERM: it stops serving, then raises the signal again, and SIGTERM's default
    action ends the process there, before any `finally` after run() (the workers would never hand their
    jobs back). This server runs `shut_down` before that."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                try:
                    yield
                finally:
                    shut_down()

    return Server(config)
