"""Run a command's ``main`` in this process, as its console script would, capturing what it prints.

A subprocess pays the command's imports (TRL, torch, sentence-transformers: 10-20 s on two
cores) on every call; tables of bad inputs run in-process, and one case per command still
runs as a real subprocess to show its stderr is that one line.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


def run_main(main: Callable[[list[str]], int], args: list[str]) -> Done:
    """``main(args)`` with stdout and stderr captured; argparse's exits count as return codes."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Done(code, out.getvalue(), err.getvalue())
