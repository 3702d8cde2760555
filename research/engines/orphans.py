"""Engine processes die with the process that started them, however it dies.

vLLM runs its engine core (and that its workers) in child processes. When the process
that started them is killed outright (``kill -9``, the OOM killer), nothing in it runs
to shut them down: they are re-parented to init and keep the memory — gigabytes of RAM,
or the GPU memory the rerun needs. :func:`die_with_parent` asks Linux to send SIGKILL to
every child this process forks from now on (and to theirs) the moment its parent dies
(``PR_SET_PDEATHSIG``). vLLM's workers already follow their engine core down.

It covers children started by ``fork`` (vLLM's default, ``VLLM_WORKER_MULTIPROC_METHOD=
fork``); with ``spawn`` the hook does not run in the child, so a killed parent still
leaves them — use a process manager that kills the whole group (systemd, Kubernetes) there.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_forking_parent = os.getpid()
_installed = False


def _remember_parent() -> None:
    global _forking_parent
    _forking_parent = os.getpid()


def _die_with_parent_in_child() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != _forking_parent:  # the parent died before the request took effect
        os._exit(1)


def die_with_parent() -> None:
    """From now on, every child this process forks is killed when this process dies. Linux only; idempotent."""
    global _installed
    if _installed or not sys.platform.startswith("linux"):
        return
    _installed = True
    os.register_at_fork(before=_remember_parent, after_in_child=_die_with_parent_in_child)
