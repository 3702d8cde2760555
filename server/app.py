"""The OpenAI-compatible app, assembled: one router per API over the serving layer, middleware, access.

Each API is a router beside its types and renderer (:mod:`research.server.chat`,
:mod:`research.server.completions`, :mod:`research.server.responses`); they validate the
request, render its prompt, make a :class:`~research.server.serving.Job` and reply or
stream through :class:`~research.server.routing.Generation`. :meth:`Server.run` is where
the search loop's events become API output for all of them.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, params
from fastapi.middleware.cors import CORSMiddleware

from research.http_errors import APIError, BodyLimit, errors, install_error_handlers
from research.retrieval import dropin_router, v1_search_router
from research.server import chat, completions, operations, responses
from research.server.middleware import Admission, RequestLog
from research.server.routing import Generation
from research.server.serving import Server, ServerConfig

__all__ = ["Server", "ServerConfig", "create_app"]


def api_key_check(key: str) -> params.Depends:
    """A dependency refusing a request without ``Authorization: Bearer <key>`` (401)."""

    async def authorize(request: Request) -> None:
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), key.encode()):
            raise APIError(
                401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip

    return Depends(authorize)


def create_app(server: Server) -> FastAPI:
    """The FastAPI app: OpenAI routes, the retriever's routes, the playground, health and metrics.

    Its lifespan closes ``server`` (engine and retriever) at shutdown: uvicorn re-raises
    SIGTERM/SIGINT once it stops, so code after ``serve()`` never runs, and a vLLM engine
    left open would outlive the process.
    """
    cfg = server.config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await server.close()

    # No /docs or /redoc: their pages load Swagger UI from a CDN and are blank offline.
    # The API is documented in openai_compat.md; the schema stays at /openapi.json.
    app = FastAPI(title="ReSearch server", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    # Outermost last: the log sees every request; CORS headers reach a 429 too; an over-large body is refused
    # before it takes a slot.
    app.add_middleware(Admission, server=server)
    app.add_middleware(BodyLimit, max_bytes=cfg.max_request_bytes)
    if cfg.allowed_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(cfg.allowed_origins), allow_methods=["*"], allow_headers=["*"],
            expose_headers=["x-request-id"],
        )  # fmt: skip
    app.add_middleware(RequestLog, metrics=server.metrics)

    keyed = {"dependencies": [api_key_check(cfg.api_key)], "responses": errors(401)} if cfg.api_key else {}
    generation = Generation(server)
    for api in (chat, completions, responses):
        app.include_router(api.router(generation), **keyed)
    app.include_router(operations.models_router(server), **keyed)
    app.include_router(v1_search_router(server.retriever, search_timeout=cfg.search_timeout), **keyed)
    dropins = dropin_router(server.retriever, default_k=cfg.search_top_k, search_timeout=cfg.search_timeout)
    app.include_router(dropins, **({} if cfg.open_retriever_routes else keyed))
    app.include_router(operations.router(server))
    return app
