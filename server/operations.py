"""The routes around generation: the playground page, health, Prometheus metrics and the model list."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from research.http_errors import APIError, errors
from research.server.serving import Server
from research.wire import Health, ModelCard, ModelList

PLAYGROUND = Path(__file__).parent / "static" / "playground.html"
"""The browser playground served at ``/``: one static page on the public streaming API."""


def router(server: Server) -> APIRouter:
    """``/`` (the playground), ``/health`` and ``/metrics``: open, whatever the API key."""
    routes = APIRouter()

    @routes.get("/", include_in_schema=False)
    @routes.get("/playground", include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(PLAYGROUND.read_text(encoding="utf-8"))

    unhealthy = {"model": Health, "description": "Not ready: what failed (engine, retriever) and why"}

    @routes.get("/health", response_model=Health, responses={503: unhealthy})
    async def health() -> JSONResponse:
        """200 when the engine and a probe search answer; 503 naming what does not (and why)."""
        problems = await server.check_health()
        status = "unhealthy" if problems else "ok"
        body = Health(status=status, model=server.config.model_name, running=server.running, **problems)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=503 if problems else 200)

    @routes.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus metrics; the stored objects' counts as the store has them (left as they were if it is down)."""
        with suppress(APIError):
            server.metrics.count_stored(await server.store.counts(), len(server.background.tasks))
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return routes


def models_router(server: Server) -> APIRouter:
    """``GET /v1/models`` and ``GET /v1/models/{model}``: the one model this server serves."""
    routes = APIRouter(tags=["models"])
    card = ModelCard(id=server.config.model_name, template=server.config.template, protocol=server.config.protocol)

    @routes.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[card])

    @routes.get("/v1/models/{model:path}", responses=errors(404))
    async def model(model: str) -> ModelCard:
        server.check_model(model)
        return card

    return routes
