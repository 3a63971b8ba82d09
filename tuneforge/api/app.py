"""The FastAPI application: the OCI API's routers and the console over one service layer, with
OCI's error shape, request ids, size limits and signature authentication in front of them."""

from __future__ import annotations

from fastapi import FastAPI

from tuneforge import __version__
from tuneforge.api import (
    clusters_routes,
    endpoints_routes,
    errors,
    imported_models_routes,
    inference_routes,
    models_routes,
    objectstorage,
    openai_fine_tuning_routes,
    openai_routes,
    sweeps_routes,
    workrequests_routes,
)
from tuneforge.api.auth import SignatureAuthMiddleware
from tuneforge.api.protocol import LimitsMiddleware, RequestIdMiddleware
from tuneforge.services.context import Services
from tuneforge.services.schemas.openai_fine_tuning import OpenAIError
from tuneforge.web import console


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="TuneForge",
        version=__version__,
        description="OCI Generative AI compatible fine-tuning API (custom models) and an Object Storage subset.",
        # No /docs or /redoc: FastAPI's pages load Swagger UI and ReDoc from a CDN (blank offline) and the only
        # packaged Swagger UI (swagger-ui-bundle, 4.15) cannot read OpenAPI 3.1. /openapi.json stays, unsigned:
        # any OpenAPI viewer reads it (docs/service.md, "The OpenAPI document").
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.state.config = services.config  # the console's session keys live in the data dir
    routers = (
        models_routes,
        imported_models_routes,
        clusters_routes,
        endpoints_routes,
        sweeps_routes,
        workrequests_routes,
        objectstorage,
        inference_routes,
        openai_routes,
        openai_fine_tuning_routes,
    )
    for module in routers:
        app.include_router(module.router)
    console.install(app)  # the web console at / (tuneforge/web)
    errors.install(app)
    app.add_exception_handler(OpenAIError, openai_fine_tuning_routes.openai_error)  # OpenAI's shape, with `param`
    # Outermost first on the way in: request id, then limits, then signatures (Starlette adds in reverse).
    app.add_middleware(SignatureAuthMiddleware, sessions=services.sessions, error_response=errors.send_error)
    app.add_middleware(LimitsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app
