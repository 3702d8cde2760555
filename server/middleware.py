"""ASGI plumbing around the routes: admission, the request log, and streams to clients that stop reading.

Both middlewares are plain ASGI, not ``BaseHTTPMiddleware``: they wrap the whole call,
so what they hold (a concurrency slot) is released however the call ends — a reply,
an error, a client gone at any step, a cancellation — and a request whose response
never starts is still logged (as 499, nginx's "client closed request").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping

from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from research.http_errors import APIError, error_response
from research.server.metrics import Metrics
from research.server.serving import Server

log = logging.getLogger("research.server")

GENERATION_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})
COUNTED_ROUTES = frozenset({"/search", "/batch_search", "/retrieve", "/mcp"})
"""Besides every ``/v1/`` route: requests counted in ``research_requests`` by endpoint and status."""


class Admission:
    """A slot from ``server`` (:meth:`Server.admit`: a 429 when all are taken) for every generation request.

    The slot is held for the whole ASGI call: body, prompt rendering, generation and the
    last byte of a stream.
    """

    def __init__(self, app: ASGIApp, server: Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in GENERATION_ROUTES:
            return await self.app(scope, receive, send)
        try:
            self.server.admit()
        except APIError as error:
            return await error_response(error)(scope, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            self.server.release()


class RequestLog:
    """Count API requests by endpoint and status, and log each with its latency and request id."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status, request_id = 499, None  # no response started: the client left first

        async def watched(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = message["status"]
                request_id = dict(message.get("headers", ())).get(b"x-request-id", b"").decode() or None
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            status = 500 if status == 499 else status
            raise
        finally:
            path = scope["path"]
            if path.startswith("/v1/") or path in COUNTED_ROUTES:
                self.metrics.requests.labels(path, str(status)).inc()
            elapsed = 1000 * (time.perf_counter() - started)
            log.info("%s %s -> %d in %.1f ms", scope["method"], path, status, elapsed, extra={"request_id": request_id})


class SlowReader(Exception):
    """The client stopped reading its stream."""


class TimedStream(StreamingResponse):
    """A server-sent event stream that gives up on a client that has not read for ``write_timeout`` seconds.

    The body iterator is closed on every way out (end, disconnect, write timeout), so the
    generation behind it is aborted at once, not when the garbage collector gets to it.
    """

    def __init__(self, content: AsyncIterator[bytes], *, write_timeout: float, headers: Mapping[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.write_timeout = write_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def timed(message: Message) -> None:
            try:
                await asyncio.wait_for(send(message), self.write_timeout)
            except TimeoutError:
                raise SlowReader from None

        try:
            await super().__call__(scope, receive, timed)
        except SlowReader:  # returning unfinished makes the server close the connection
            log.warning(
                "the client read nothing for %g s; its stream is closed", self.write_timeout,
                extra={"request_id": self.headers.get("x-request-id")},
            )  # fmt: skip
        except ClientDisconnect:  # an ASGI 2.4 server raises on send once the client is gone
            log.info("client disconnected; stream closed", extra={"request_id": self.headers.get("x-request-id")})
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
