"""The console scripts: each command's ``main``, or one line naming the extra to install.

``pip install research-serve`` alone gives the clients; the server-side commands need
an extra. Without it, the command fails on a missing third-party package (when its
module loads, or later, when the arguments need it); the script names the package and
the extra that brings it in one line and exits 2 instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

DISTRIBUTION = "research-serve"


def _hint(missing: str, extra: str) -> str:
    if missing == "vllm":
        return f"pip install '{DISTRIBUTION}[{extra},gpu]' (or '[{extra},cpu]' on a machine without a GPU)"
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def _main(prog: str, module: str, extra: str, by_package: Mapping[str, str] | None = None) -> Callable[[], int]:
    """``module``'s ``main``; a missing package names ``extra`` (or ``by_package``'s extra for it) to install."""

    def main() -> int:
        try:  # commands import their heavy dependencies late, when the arguments need them
            return importlib.import_module(module).main()
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] == "research":
                raise  # one of our own modules: a broken install, not a missing extra
            missing = exc.name.split(".")[0]
            hint = _hint(missing, (by_package or {}).get(missing, extra))
            print(f"{prog}: error: {missing} is not installed: {hint}", file=sys.stderr)
            return 2

    return main


serve = _main("research-serve", "research.server.cli", "serve")
index = _main("research-index", "research.retrieval.cli", "index")
evaluate = _main("research-eval", "research.evaluation.cli", "eval")
train = _main("research-train", "research.train.cli", "train")
demo = _main("research-demo", "research.testbed.serve", "testbed")
_mcp_url = _main("research mcp", "research.clients.mcp", "mcp")
_mcp_index = _main("research mcp", "research.server.mcp_stdio", "index,mcp", {"mcp": "mcp"})


def research() -> int:
    """``research``: the clients (``research ask``, no extra needed), and ``research mcp`` (the [mcp] extra): over
    HTTP a client's (``--url``), on a local index the server package's (``--index``)."""
    if sys.argv[1:2] == ["mcp"]:
        local = any(arg == "--index" or arg.startswith("--index=") for arg in sys.argv[2:])
        return _mcp_index() if local else _mcp_url()
    return importlib.import_module("research.clients.ask").main()
