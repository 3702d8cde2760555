"""Request heads are bounded: a real uvicorn with our servers' options, driven over raw sockets.

uvicorn alone (httptools) reads request lines and headers of any size and count; ours refuse
past 16 KiB of URL (414), 64 KiB of head or 100 headers (431), with the JSON error body, and
close the connection. Bodies are not heads: a large body still reaches the app.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import uvicorn
from fastapi import FastAPI, Request

from research.http_errors.head import MAX_HEAD_BYTES, MAX_HEADERS, MAX_URL_BYTES, Listen
from tests.conftest import free_port


@pytest.fixture
async def port():
    app = FastAPI()

    @app.api_route("/echo", methods=["GET", "POST"])
    async def echo(request: Request) -> dict[str, int]:
        return {"headers": len(request.headers), "body": len(await request.body())}

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, **Listen(port=port).uvicorn_options(), lifespan="off", log_level="error"))
    task = asyncio.create_task(uv.serve())
    while not uv.started:
        await asyncio.sleep(0.02)
    yield port
    uv.should_exit = True
    await task


def exchange(port: int, *requests: bytes, chunk: int = 8192) -> list[tuple[int, dict]]:
    """Send each request on one connection (in ``chunk``-byte writes) and read its reply: (status, JSON body).

    A server that closes mid-send ends the sending; the reply it wrote first is still read."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for request in requests:
            try:
                for i in range(0, len(request), chunk):
                    sock.sendall(request[i : i + chunk])
            except (BrokenPipeError, ConnectionResetError):
                pass
            head, _, rest = read_until(sock, b"\r\n\r\n").partition(b"\r\n\r\n")
            length = int(
                next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
            )
            while len(rest) < length:
                rest += sock.recv(65536)
            replies.append((int(head.split()[1]), json.loads(rest[:length])))
            if b"connection: close" in head.lower():
                assert sock.recv(1) == b""  # and the connection is closed
                break
    return replies


def read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while end not in data:
        more = sock.recv(65536)
        assert more, f"the connection closed before {end!r}: {data[:200]!r}"
        data += more
    return data


def get(path: str = "/echo", headers: list[str] = ()) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: x", *headers]) + "\r\n\r\n").encode()


async def test_ordinary_requests_on_one_connection_pass(port):
    many = [f"X-Header-{i}: {i}" for i in range(50)] + ["Cookie: " + "c" * 8000]
    body = b"x" * 300_000  # a body is not a head
    post = f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    replies = await asyncio.to_thread(exchange, port, get(headers=many), post, get())
    assert replies == [(200, {"headers": 52, "body": 0}), (200, {"headers": 2, "body": 300_000}),
                       (200, {"headers": 1, "body": 0})]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "status", "message"),
    [
        (get(headers=[f"X-{i}: {i}" for i in range(MAX_HEADERS + 1)]), 431, f"more than {MAX_HEADERS} headers"),
        (get(headers=["X-Big: " + "v" * 2**20]), 431, f"head is over {MAX_HEAD_BYTES} bytes"),
        (get(headers=[f"X-{i}: " + "v" * 1000 for i in range(80)]), 431, f"head is over {MAX_HEAD_BYTES} bytes"),
        (get("/echo?" + "q" * (MAX_URL_BYTES + 1)), 414, f"URL is over {MAX_URL_BYTES} bytes"),
    ],
    ids=["too many headers", "one 1 MiB header", "80 headers of 1 KB", "a 16 KiB URL"],
)
async def test_an_oversized_head_is_refused_with_a_json_error_and_the_connection_closed(
    port, request_, status, message
):
    first, (got, body) = await asyncio.to_thread(exchange, port, get(), request_)  # the second on a used connection
    assert first == (200, {"headers": 1, "body": 0})
    assert got == status and message in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"


async def test_the_connection_after_a_refusal_is_new_and_served(port):
    refused = await asyncio.to_thread(exchange, port, get(headers=[f"X-{i}: {i}" for i in range(MAX_HEADERS + 1)]))
    assert [status for status, _ in refused] == [431]
    assert await asyncio.to_thread(exchange, port, get()) == [(200, {"headers": 1, "body": 0})]
