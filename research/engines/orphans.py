"""Engine processes die with the process that started them, however it dies.

vLLM runs its engine core (and that its workers) in child processes. When the process
that started them is killed outright (``kill -9``, the OOM killer), nothing in it runs
to shut them down: they are re-parented to init and keep the memory — gigabytes of RAM,
or the GPU memory the rerun needs. :func:`watch_children` starts a small watchdog
process that notes this process's descendants (PID and start time, from ``/proc``)
twice a second and, once this process is gone, kills the ones still running. It works
whichever way vLLM starts its processes (``fork`` or ``spawn``).

The watch ends only when the parent has gone: the watchdog ignores SIGINT and SIGTERM,
which a terminal's Ctrl-C or a ``kill`` of the process group also sends it, so it
cannot leave before the processes it guards. Linux wakes it the moment the parent dies
(``PR_SET_PDEATHSIG``); a change of its parent PID, checked at every scan, ends the
watch as well, whichever thread of the parent started it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
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


def processes() -> dict[int, tuple[int, int]]:
    """Every process: PID -> (parent PID, start time in clock ticks since boot), from ``/proc/PID/stat``.

    With the PID, the start time names one process: a PID reused later has a later start.
    """
    found = {}
    for entry in os.listdir("/proc"):
        with suppress(OSError, IndexError, ValueError):  # gone meanwhile, or not a process
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            found[int(entry)] = int(fields[1]), int(fields[19])
    return found


def descendants(pids: Iterable[int], procs: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Every descendant of ``pids`` among ``procs``: PID -> start time.

    >>> import subprocess, sys
    >>> child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    >>> child.pid in descendants([os.getpid()], processes())
    True
    >>> child.kill(); child.wait()
    -9
    """
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = {}, list(pids)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found[child] = procs[child][1]
                stack.append(child)
    return found


def _watch(parent: int) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # taken by sigtimedwait below, never delivered
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGUSR1)
    seen: dict[int, int] = {}
    while os.getppid() == parent:
        procs = processes()
        seen = {pid: started for pid, started in seen.items() if procs.get(pid, (0, -1))[1] == started}
        seen |= descendants([parent], procs)
        signal.sigtimedwait({signal.SIGUSR1}, 0.5)
    procs = processes()
    seen |= descendants(seen, procs)  # started since the last look, by a process we saw
    seen.pop(os.getpid(), None)
    for pid, started in seen.items():
        if procs.get(pid, (0, -1))[1] == started:  # still the process we saw, not a reused PID
            with suppress(OSError):  # gone meanwhile
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    _watch(int(sys.argv[1]))
