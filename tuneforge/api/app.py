"""The FastAPI application: routers, OCI error handling, request ids."""

from __future__ import annotations

from typing import Callable

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from tuneforge import __version__
from tuneforge.api import clusters_routes, errors, models_routes, objectstorage, workrequests_routes
from tuneforge.api.config import ServiceConfig
from tuneforge.api.protocol import RequestIdMiddleware
from tuneforge.web.routes import router as console_router


def create_app(config: ServiceConfig, sessions: sessionmaker[Session], wake_workers: Callable[[], None] = lambda: None) -> FastAPI:
    """The app over an open store. `wake_workers` is called when a job is queued, so an idle
    worker in this process starts it at once instead of at its next poll."""
    app = FastAPI(
        title="TuneForge",
        version=__version__,
        description="OCI Generative AI compatible fine-tuning API (custom models) and an Object Storage subset.",
    )
    app.state.config = config
    app.state.sessions = sessions
    app.state.wake_workers = wake_workers
    for module in (models_routes, clusters_routes, workrequests_routes, objectstorage):
        app.include_router(module.router)
    app.include_router(console_router)  # the web console at / (tuneforge/web)
    errors.install(app)
    app.add_middleware(RequestIdMiddleware)
    return app
