"""OpenAI-style error bodies and strict JSON for every HTTP API we serve (chat server and retriever).

Every error is ``{"error": {"message", "type", "param", "code"}}`` with the status
OpenAI would use: malformed JSON and schema violations are 400 (not FastAPI's
422), naming the offending field in ``param``. Every JSON body and event is strict
JSON (:func:`json_bytes`): no NaN, no lone surrogate, and never a reply lost for one.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from research.wire import valid_unicode

log = logging.getLogger("research.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    501: "not_implemented_error",
    503: "service_unavailable",
    504: "service_unavailable",
}


def check_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON can carry lone surrogates ("\ud800"); no tokenizer takes them
        raise ValueError(f"the text is not valid Unicode: {exc.reason} at character {exc.start}") from None
    return text


Text = Annotated[str, AfterValidator(check_unicode)]
"""A request string that is valid Unicode (a 400 naming the field otherwise, not a 500 later)."""


def _strict(value: Any) -> Any:
    """``value`` with every non-finite float as None and every string as valid Unicode."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return valid_unicode(value)
    if isinstance(value, dict):
        return {_strict(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def json_bytes(content: Any) -> bytes:
    """``content`` as strict JSON in UTF-8 (RFC 8259: no ``NaN``/``Infinity``, no lone surrogate).

    A value JSON cannot carry is written as ``null`` (a float) or with U+FFFD (a string), and logged: a reply
    is never lost to one bad value after the work behind it is done.

    >>> json_bytes({"score": float("nan"), "text": "a\\ud800", "n": [1, 2.5]})
    b'{"score":null,"text":"a\\xef\\xbf\\xbd","n":[1,2.5]}'
    """
    dump = functools.partial(json.dumps, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return dump(content).encode()
    except ValueError as exc:  # a non-finite float, or a lone surrogate (UnicodeEncodeError is a ValueError)
        log.warning("a reply held a value JSON cannot carry (%s): written as null or U+FFFD", exc)
        return dump(_strict(content)).encode()


class StrictJSONResponse(JSONResponse):
    """A JSON response written by :func:`json_bytes` (Starlette's refuses a NaN with a 500)."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


class APIError(Exception):
    """An error with an HTTP status, raised anywhere in a request handler."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The JSON body of an error response.

    >>> error_body(404, "no such model", param="model", code="model_not_found")["error"]["type"]
    'not_found_error'
    """
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "internal_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
"""The JSON schema of :func:`error_body`, as the OpenAPI document shows every error."""

_MEANINGS = {
    400: "Invalid request: the message says what to fix, `param` names the field",
    401: "Missing or wrong API key",
    404: "Unknown model, or no passage with that id",
    413: "Request body over the server's limit",
    429: "At the concurrency limit; retry after `Retry-After` seconds",
    500: "A bug; the server log has the cause, tied by request id",
    501: "The server searches a running retriever, which cannot look passages up by id",
    503: "The search loop or the passage index failed",
    504: "The passage index did not answer within the search timeout",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each in the OpenAI error shape."""
    schema = {"application/json": {"schema": ERROR_SCHEMA}}
    return {status: {"description": _MEANINGS[status], "content": schema} for status in statuses}


def document_errors(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document say what it does: a 400 where FastAPI would say 422, 413 for bodies, 500."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = make()
            for operations in schema["paths"].values():
                for op in operations.values():
                    responses = op["responses"]
                    statuses = [500]
                    if responses.pop("422", None) is not None:
                        statuses.append(400)
                    if "requestBody" in op:
                        statuses += [400, 413]
                    for status, response in errors(*statuses).items():
                        responses.setdefault(str(status), response)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def error_response(error: APIError) -> JSONResponse:
    body = error_body(error.status, error.message, param=error.param, code=error.code)
    return StrictJSONResponse(body, status_code=error.status, headers=error.headers)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _describe(errors: list[Any]) -> tuple[str, str | None, str]:
    """One readable sentence for pydantic's error list, the first bad field and an error code."""
    parts, param, code = [], None, "invalid_request"
    for err in errors:
        # Union members appear in the location as type tags ("str", "list[int]", "function-after[...]"): drop them.
        loc = [str(x) for x in err.get("loc", ()) if x != "body" and str(x) not in _TYPE_TAGS and "[" not in str(x)]
        field = ".".join(loc) or None
        param = param or field
        if err.get("type") == "unsupported_parameter":  # research.server.requests.unsupported
            code = "unsupported_parameter"
            parts.append(f"{field}: {err.get('msg')}" if field else str(err.get("msg")))
            continue
        if err.get("type") == "json_invalid":
            parts.append(f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})")
        elif err.get("type") == "extra_forbidden":
            parts.append(f"unrecognized request argument: {field}")
        elif err.get("type") == "value_error":  # our own validators: the message says it all
            parts.append(str(err.get("ctx", {}).get("error", err.get("msg"))))
        else:
            parts.append(f"{field}: {err.get('msg')}" if field else str(err.get("msg")))
    return "; ".join(parts), param, code


def install_error_handlers(app: FastAPI) -> None:
    """Answer validation errors, HTTP errors, :class:`APIError` and unexpected failures (500) in the OpenAI shape.

    The app's OpenAPI document says so too (:func:`document_errors`).
    """
    document_errors(app)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param, code = _describe(list(exc.errors()))
        return error_response(APIError(400, message, param=param, code=code))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:  # the traceback goes to the log
        return error_response(APIError(500, "the server failed to handle the request; its log has the cause"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "request_too_large" if exc.status_code == 413 else None
        return error_response(APIError(exc.status_code, str(exc.detail), code=code, headers=exc.headers))


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is a 413, before it is read whole or parsed.

    A declared ``Content-Length`` over the limit is refused at once; a chunked body is
    counted as it arrives and refused at the first byte past the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _error(self) -> StarletteHTTPException:
        return StarletteHTTPException(413, f"the request body is over this server's limit of {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = self._error()
            response = error_response(APIError(error.status_code, str(error.detail), code="request_too_large"))
            return await response(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self._error()  # FastAPI passes HTTP exceptions raised while reading the body through
            return message

        await self.app(scope, counted, send)
