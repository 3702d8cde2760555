"""Kill a command that runs a vLLM engine, and check that nothing it started outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil


def kill_once_the_engine_runs(
    args: list[str], log: Path, ready: Callable[[], bool], env: dict[str, str]
) -> dict[int, str]:
    """Run a command until ``ready()`` says its vLLM engine is working, kill -9 it alone, and check that every process
    it started dies with it (the watchdog's own exit included); the processes it had started, PID -> command."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 600
        while not ready():
            assert proc.poll() is None, f"it stopped early: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"its engine never started: {log.read_text()[-3000:]}"
            time.sleep(0.2)
        started = psutil.Process(proc.pid).children(recursive=True)
        names = {p.pid: " ".join(p.cmdline()[:4]) for p in started}
        os.kill(proc.pid, signal.SIGKILL)  # only the command: nothing in it runs to stop its engine
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    _, alive = psutil.wait_procs(started, timeout=60)
    assert not alive, f"orphaned processes: {[(p.pid, p.name()) for p in alive]} (of {names})"
    return names
