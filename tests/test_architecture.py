"""The architecture as a check: import layers (import-linter) and command lines that explain every flag."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_every_import_points_down_the_layers():
    """``lint-imports`` with the contracts in pyproject.toml (layers, HTTP-only clients, file-only question data)."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency"
    out = subprocess.run([lint, str(ROOT / "pyproject.toml")], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from research.evaluation.cli import parser as eval_parser
    from research.retrieval.cli import parser as index_parser
    from research.server.cli import parser as serve_parser
    from research.train.cli import parser as train_parser
    from research.train.cli import plot_parser

    index = index_parser()
    commands = {"research-serve": serve_parser(), "research-eval": eval_parser(), "research-train": train_parser(),
                "research-train plot": plot_parser()}  # fmt: skip
    for action in index._actions:
        if isinstance(action, argparse._SubParsersAction):
            commands |= {f"research-index {name}": sub for name, sub in action.choices.items()}
    return commands


@pytest.mark.parametrize("command", list(_parsers()))
def test_every_option_has_its_help(command):
    parser = _parsers()[command]
    undocumented = [a.option_strings or a.dest for a in parser._actions if not a.help and a.dest != "help"]
    assert not undocumented, f"{command}: options without help: {undocumented}"


@pytest.mark.parametrize("module", ["research.wire", "research.clients", "research.retrieval"])
def test_light_faces_import_no_heavy_library(module):
    """The wire types, the clients and retrieval's public face load neither LanceDB, pyarrow, torch nor FastAPI."""
    heavy = ("lancedb", "pyarrow", "torch", "fastapi")
    code = f"import sys, {module}; print(sorted(k for k in {heavy} if k in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"importing {module} loaded {out.stdout.strip()}"


def test_retrievals_public_face_resolves_every_name():
    import research.retrieval as retrieval

    assert [name for name in retrieval.__all__ if getattr(retrieval, name, None) is None] == []
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = retrieval.nope
