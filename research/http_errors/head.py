"""Our uvicorn servers (``research-serve``, ``research-index serve``): where they listen (:class:`Listen`, their
flags) and a bound on each request's head.

uvicorn's httptools protocol reads a request line and headers of any length and count
(llhttp sets no limit; the parser buffers a header until it ends), so one client can make
the server hold megabytes before any of our code runs. :class:`BoundedHead` counts the head's
bytes as they arrive and refuses, before the app sees anything, with the JSON error body every
other refusal has, then closes the connection (after :data:`LINGER` seconds of dropping what
still comes):

* a request line (the URL) over :data:`MAX_URL_BYTES`: 414;
* a head (request line and headers) over :data:`MAX_HEAD_BYTES`, or more than
  :data:`MAX_HEADERS` headers: 431.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from research.http_errors import error_body

MAX_URL_BYTES = 16 * 1024
"""Longest request line target (nginx answers 414 past 8 KiB by default, Node past 16 KiB)."""
MAX_HEAD_BYTES = 64 * 1024
"""Most bytes of request line and headers together."""
MAX_HEADERS = 100
"""Most header lines in one request (Python's http.client takes 100)."""
LINGER = 2.0
"""Seconds a refused connection still reads (and drops) what the client sends before it closes, so the client reads
the refusal instead of a connection reset (nginx's lingering close)."""


class HeadTooLarge(Exception):
    """A request's head passed a bound; ``status`` and ``message`` are the refusal."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class BoundedHead(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing request heads past :data:`MAX_URL_BYTES`, :data:`MAX_HEAD_BYTES` or
    :data:`MAX_HEADERS` (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        """Reading a head: from the connection's start or the end of the last message, to the end of headers."""
        self._raw = 0
        """Bytes received while reading the current head (the parser buffers an unfinished header)."""
        self._parsed = self._url_bytes = self._header_count = 0
        self._refusal: HeadTooLarge | None = None

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # lingering: dropped
        counting = self._in_head
        self._raw += len(data) if counting else 0
        super().data_received(data)  # one read (at most asyncio's 256 KiB) is all the parser may hold past the bound
        if counting and self._in_head and self._raw > MAX_HEAD_BYTES and self._refusal is None:
            self._refuse(self._too_large())

    @staticmethod
    def _too_large() -> HeadTooLarge:
        return HeadTooLarge(
            431, f"the request's head is over {MAX_HEAD_BYTES} bytes", "request_header_fields_too_large"
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed = self._url_bytes = self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        self._parsed += len(url)
        if self._url_bytes > MAX_URL_BYTES:
            self._refusal = HeadTooLarge(414, f"the request's URL is over {MAX_URL_BYTES} bytes", "uri_too_long")
            raise self._refusal
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._parsed += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > MAX_HEADERS:
            message = f"the request has more than {MAX_HEADERS} headers"
            self._refusal = HeadTooLarge(431, message, "request_header_fields_too_large")
            raise self._refusal
        if self._parsed > MAX_HEAD_BYTES:  # a whole head that came in one read
            self._refusal = self._too_large()
            raise self._refusal
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._raw = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """The parser stopped: on one of our bounds (raised from a callback), refuse with its status."""
        if self._refusal is None:
            return super().send_400_response(msg)
        self._refuse(self._refusal)

    def _refuse(self, refusal: HeadTooLarge) -> None:
        self._refusal = refusal
        self.logger.warning("refused a request: %s", refusal.message)
        body = json.dumps(error_body(refusal.status, refusal.message, code=refusal.code)).encode()
        head = [STATUS_LINE[refusal.status], b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n"]  # fmt: skip
        self.transport.write(b"".join(head) + body)
        self._in_head = False
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)


@dataclass(frozen=True, kw_only=True)
class Listen:
    """Where a server listens (``research-serve``, ``research-index serve``)."""

    host: str = "127.0.0.1"
    """interface to listen on (default: loopback only; 0.0.0.0: all)"""
    port: int = 8000
    """port to listen on"""
    keep_alive: float = 75.0
    """seconds an idle connection stays open; longer than clients keep pooled ones (httpx: 5 s), so the client closes
    it first (a request sent as the server closes one fails with a connection reset)"""

    def __post_init__(self) -> None:
        if not self.keep_alive > 0:
            raise ValueError(f"--keep-alive must be positive, got {self.keep_alive:g}")

    def uvicorn_options(self) -> dict[str, Any]:
        """Where and how uvicorn listens: request heads bounded (:class:`BoundedHead`)."""
        return {"host": self.host, "port": self.port, "timeout_keep_alive": self.keep_alive, "http": BoundedHead}
