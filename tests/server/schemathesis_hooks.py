"""Schemathesis hooks for ``tests/server/test_openapi.py`` (loaded through ``$SCHEMATHESIS_HOOKS``)."""

from __future__ import annotations

import os
from typing import Any

import schemathesis


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    """Requests that name a model name the served one, so that valid ones reach generation instead of a 404."""
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        body["model"] = os.environ["RESEARCH_SERVED_MODEL"]
    return body
