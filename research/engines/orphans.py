"""Engine processes die with the process that started them, however it dies.

vLLM runs its engine core (and that its workers) in child processes. When the process
that started them is killed outright (``kill -9``, the OOM killer), nothing in it runs
to shut them down: they are re-parented to init and keep the memory — gigabytes of RAM,
or the GPU memory the rerun needs. :func:`watch_children` starts a small watchdog
process that notes this process's descendants twice a second and, the moment this
process is gone (Linux tells it: ``PR_SET_PDEATHSIG``), kills the ones still running.
It works whichever way vLLM starts its processes (``fork`` or ``spawn``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress

_PR_SET_PDEATHSIG = 1
_watched = False


def watch_children() -> None:
    """From now on, this process's descendants are killed when it dies. Linux only; idempotent."""
    global _watched
    if _watched or not sys.platform.startswith("linux"):
        return
    _watched = True
    subprocess.Popen(
        [sys.executable, "-m", "research.engines.orphans", str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _started(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22); None if it is gone.

    With the PID it names one process: a PID reused later has a later start.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _watch(parent: int) -> None:
    import psutil

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    me, seen = os.getpid(), {}
    try:
        while os.getppid() == parent:
            with suppress(psutil.Error, OSError):  # a process vanishing mid-scan must not end the watch
                for child in psutil.Process(parent).children(recursive=True):
                    if child.pid != me:
                        seen[child.pid] = _started(child.pid)
            time.sleep(0.5)
    except SystemExit:
        pass
    finally:
        for pid, started in seen.items():
            if started is not None and _started(pid) == started:  # still the process we saw, not a reused PID
                with suppress(OSError):  # gone meanwhile
                    os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    _watch(int(sys.argv[1]))
