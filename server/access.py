"""Who is asking: the API keys a server accepts (``--api-key``, ``--api-keys-file``) and the owner each names.

Every stored object (:mod:`research.server.store`) belongs to the owner of the key that made it.
Without keys every request is the one anonymous owner; with ``--api-key`` it is ``default``;
a keys file names each key's owner (``KEY NAME`` a line), or the key's hash stands for it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, Request, params
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from research.http_errors import APIError, error_response

ANONYMOUS = ""


def read_keys_file(path: Path) -> dict[str, str]:
    """``KEY [NAME]`` a line (``#`` comments, blank lines skipped) as key → owner; a bad file is a ValueError
    naming the line."""
    keys: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise ValueError(f"{path}:{number}: a line is a key and an optional name, got {len(words)} words")
        key = words[0]
        if key in keys:
            raise ValueError(f"{path}:{number}: the key is listed twice")
        keys[key] = words[1] if len(words) == 2 else "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    if not keys:
        raise ValueError(f"{path} lists no key")
    return keys


@dataclass(frozen=True)
class Access:
    """The accepted keys and their owners; none: every request is served, as the anonymous owner."""

    keys: dict[str, str]

    @classmethod
    def of(cls, api_key: str | None, keys_file: str | None) -> Access:
        keys = read_keys_file(Path(keys_file)) if keys_file else {}
        if api_key:
            keys.setdefault(api_key, "default")
        return cls(keys)

    @property
    def required(self) -> bool:
        return bool(self.keys)

    def owner(self, headers: Headers) -> str:
        """The owner of the request's key; a 401 without ``Authorization: Bearer <key>`` of a known key."""
        if not self.keys:
            return ANONYMOUS
        scheme, _, sent = headers.get("authorization", "").partition(" ")
        sent_bytes, found = sent.strip().encode(), None
        for key, owner in self.keys.items():  # every key compared, in constant time each
            if hmac.compare_digest(sent_bytes, key.encode()):
                found = owner
        if scheme.lower() != "bearer" or found is None:
            raise APIError(
                401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        return found

    def dependency(self) -> params.Depends:
        """A route dependency refusing a request without a known key (:meth:`owner`)."""

        async def authorize(request: Request) -> None:
            request.state.owner = self.owner(request.headers)

        return Depends(authorize)


def owner_of(request: Request) -> str:
    """The owner the key dependency found (anonymous where no key is needed)."""
    return getattr(request.state, "owner", ANONYMOUS)


@dataclass(frozen=True, slots=True)
class BehindKey:
    """An ASGI app mounted beside the routes (``/mcp``) behind the API keys (:meth:`Access.owner`)."""

    app: ASGIApp
    access: Access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            owner = self.access.owner(Headers(scope=scope))
        except APIError as error:
            return await error_response(error)(scope, receive, send)
        scope.setdefault("state", {})["owner"] = owner
        await self.app(scope, receive, send)
