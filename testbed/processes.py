"""Servers on loopback, for tests and benchmarks: subprocesses (free ports, start, wait, stop), and ASGI apps run
under uvicorn in this process (:func:`start_app`)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import uvicorn


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server subprocess in its own process group: started at once, waited for when needed, stopped as a group
    (by :meth:`stop`, or on leaving a ``with`` block)."""

    def __init__(self, args: list[str], health: str, log: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.args, self.health, self.log, self.env = args, health, log, env
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
            )

    @property
    def port(self) -> int:
        """The loopback port its health URL names."""
        return int(self.health.split(":")[2].split("/")[0])

    def wait_healthy(self, timeout: float = 600) -> None:
        """Return once the ``health`` URL answers 200; raise with the log's tail if the server exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.args[:3]} exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}"
                )
            try:
                if httpx.get(self.health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.args[:3]} did not come up:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.5)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM the whole process group (engines run in child processes), SIGKILL after 60 s."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


@contextmanager
def launched(
    args: list[str], health: str, log: Path, *, timeout: float = 600, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server until the block ends, once its ``health`` URL answers 200; output goes to ``log``."""
    with ServerProcess(args, health, log, env=env) as server:
        server.wait_healthy(timeout)
        yield server.proc


async def _serve(uv: uvicorn.Server, app) -> None:
    """``uv.serve()``, with the app's server started (its store and leases) and its MCP session manager running
    (its lifespan, which would close the shared engine, is off)."""
    state = getattr(app, "state", None)
    mcp, server = getattr(state, "mcp", None), getattr(state, "server", None)
    if server is not None:
        await server.start()
    try:
        if mcp is None:
            return await uv.serve()
        async with mcp.session_manager.run():
            await uv.serve()
    finally:
        if server is not None:
            await server.stop()


async def start_app(app) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    """Serve an ASGI ``app`` with uvicorn on a free loopback port; (server, task, base URL)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    task = asyncio.create_task(_serve(uv, app))
    while not uv.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return uv, task, f"http://127.0.0.1:{port}"


async def stop(uv: uvicorn.Server, task: asyncio.Task[None]) -> None:
    uv.should_exit = True
    await task
