"""The console scripts: each command's ``main``, or one line naming the extra to install.

``pip install research-serve`` alone gives the clients; the server-side commands need
an extra. Without it, the command fails on a missing third-party package (when its
module loads, or later, when the arguments need it); the script names the package and
the extra that brings it in one line and exits 2 instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

DISTRIBUTION = "research-serve"


def _hint(missing: str, extra: str) -> str:
    if missing == "vllm":
        return f"pip install '{DISTRIBUTION}[{extra},gpu]' (or '[{extra},cpu]' on a machine without a GPU)"
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def _main(prog: str, module: str, extra: str) -> Callable[[], int]:
    def main() -> int:
        try:  # commands import their heavy dependencies late, when the arguments need them
            return importlib.import_module(module).main()
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] == "research":
                raise  # one of our own modules: a broken install, not a missing extra
            missing = exc.name.split(".")[0]
            print(f"{prog}: error: {missing} is not installed: {_hint(missing, extra)}", file=sys.stderr)
            return 2

    return main


serve = _main("research-serve", "research.server.cli", "serve")
index = _main("research-index", "research.retrieval.cli", "index")
evaluate = _main("research-eval", "research.evaluation.cli", "eval")
train = _main("research-train", "research.train.cli", "train")
demo = _main("research-demo", "research.testbed.serve", "testbed")
