"""The OpenAI-compatible app, assembled: one router per API over the serving layer, middleware, access.

Each API is a router beside its types and its serving object (:mod:`research.server.chat`,
:mod:`research.server.completions`, :mod:`research.server.responses`): the route validates the
request and calls the serving object (a :class:`~research.server.routing.OpenAIServing`) once,
which renders the prompt, makes a :class:`~research.server.serving.Job` on the shared
:class:`Server` and replies or streams. :meth:`Server.run` is where the search loop's events
become API output for all of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Route

from research.http_errors import BodyLimit, errors, install_error_handlers
from research.retrieval import dropin_router, v1_search_router
from research.server import chat, completions, conversations, operations, responses, stored_responses
from research.server.access import BehindKey
from research.server.mcp_local import PATH as MCP_PATH
from research.server.mcp_local import mcp_app
from research.server.middleware import Admission, RequestLog
from research.server.serving import Server, ServerConfig

__all__ = ["Server", "ServerConfig", "create_app"]


def create_app(server: Server) -> FastAPI:
    """The FastAPI app: OpenAI routes, the retriever's routes, MCP, the playground, health and metrics.

    Its lifespan closes ``server`` (engine and retriever) at shutdown: uvicorn re-raises
    SIGTERM/SIGINT once it stops, so code after ``serve()`` never runs, and a vLLM engine
    left open would outlive the process.
    """
    cfg = server.config

    mcp, mcp_endpoint = mcp_app(server)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.start()
        async with mcp.session_manager.run():
            yield
        await server.close()

    # No /docs or /redoc: their pages load Swagger UI from a CDN and are blank offline.
    # The API is documented in openai_compat.md; the schema stays at /openapi.json.
    app = FastAPI(title="ReSearch server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.mcp = mcp  # its session manager runs in the lifespan (or in whatever serves the app without one)
    app.state.server = server  # started and stopped by the lifespan (or by whatever serves the app without one)
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

    access = server.access
    keyed = {"dependencies": [access.dependency()], "responses": errors(401)} if access.required else {}
    app.include_router(chat.router(chat.ChatServing(server)), **keyed)
    app.include_router(completions.router(completions.CompletionServing(server)), **keyed)
    app.include_router(responses.router(responses.ResponsesServing(server)), **keyed)
    app.include_router(stored_responses.router(server.records), **keyed)
    app.include_router(conversations.router(server.records), **keyed)
    app.include_router(operations.models_router(server), **keyed)
    app.include_router(v1_search_router(server.retriever, search_timeout=cfg.search_timeout), **keyed)
    dropins = dropin_router(server.retriever, k=server.search_top_k, search_timeout=cfg.search_timeout)
    app.include_router(dropins, **({} if cfg.open_retriever_routes else keyed))
    app.include_router(operations.router(server))
    app.router.routes.append(Route(MCP_PATH, BehindKey(mcp_endpoint, access)))
    return app
