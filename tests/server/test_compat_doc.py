"""openai_compat.md is the contract: its request tables name exactly the fields the request models accept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from research.server.chat import ChatCompletionRequest
from research.server.completions import CompletionRequest
from research.server.responses import ResponsesRequest

DOC = Path(__file__).parents[2] / "openai_compat.md"


def documented(route: str) -> set[str]:
    """Top-level field names in the first column of every table under ``## Request fields: `POST route```."""
    text = DOC.read_text()
    start = text.index(f"## Request fields: `POST {route}`")
    section = text[start : text.index("\n## ", start + 1)]
    names = set()
    for line in section.splitlines():
        cells = line.split("|")
        if line.startswith("| `") and len(cells) > 2:
            names |= {name.split(".")[0] for name in re.findall(r"`([a-z_][a-z_.]*)`", cells[1])}
    return names


def accepted(model) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


@pytest.mark.parametrize(
    ("route", "model"),
    [("/v1/chat/completions", ChatCompletionRequest), ("/v1/completions", CompletionRequest),
     ("/v1/responses", ResponsesRequest)],
)  # fmt: skip
def test_every_request_field_is_documented_and_every_documented_field_exists(route, model):
    assert documented(route) == accepted(model)
