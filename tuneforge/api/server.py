"""`tuneforge serve`: one process with the API and the worker threads over one store."""

from __future__ import annotations

import logging
import os

from tuneforge.services.config import ServiceConfig


def serve(config: ServiceConfig, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    from tuneforge.api.app import create_app
    from tuneforge.data import DEFAULT_SEED
    from tuneforge.jobs.runner import RunSettings
    from tuneforge.jobs.worker import WorkerPool
    from tuneforge.services import endpoints, inference
    from tuneforge.services.context import Services
    from tuneforge.store.db import open_store

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    sessions = open_store(config.url)  # applies migrations
    # Each job gets its share of the cores: two trainers whose thread pools both span every core
    # spend most of their time waiting at each other's barriers.
    threads = max(1, (os.cpu_count() or 1) // config.workers) if config.workers > 1 else None
    settings = RunSettings(weights=config.weights, max_attempts=config.max_attempts, seed=DEFAULT_SEED, threads=threads)
    pool = WorkerPool(sessions, settings, workers=config.workers, lease_seconds=config.lease_seconds)
    services = Services(config, sessions, wake_workers=pool.wake)
    services.warm_endpoint = lambda endpoint_id: inference.warm_endpoint(services, endpoint_id)
    app = create_app(services)
    pool.start()
    for endpoint_id in endpoints.creating(services):  # a restart while an endpoint was loading: load it again
        services.warm_endpoint(endpoint_id)
    try:
        # uvicorn handles SIGINT/SIGTERM: it stops serving and returns here. h11 (not httptools): it
        # bounds the header block it buffers (64 KiB), so no client can make it hold more.
        server_config = uvicorn.Config(app, host=host, port=port, log_level=log_level, proxy_headers=True, http="h11",
                                       h11_max_incomplete_event_size=64 * 1024)  # fmt: skip
        uvicorn.Server(server_config).run()
    finally:
        pool.stop()
        if services.serving is not None:
            services.serving.shutdown()
