"""What every command line shares: flags from a dataclass's documented fields, and one error edge.

A config dataclass documents each field with a docstring under it (as vLLM's
``EngineArgs`` does); :func:`add_fields` turns the fields into ``--flags`` whose
help is that docstring, so the text is written once, next to the field. Literal
types become choices, booleans ``--flag/--no-flag``, ``tuple[str, ...]``
comma-separated lists, ``list[...]`` a repeatable flag.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import logging
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any, Literal, TextIO, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")

USER_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError, NotADirectoryError, PermissionError, ValueError)
"""What a command reports as one ``prog: error: ...`` line (exit 2) instead of a traceback."""


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of ``cls`` and its bases (the nearest class wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for field, doc in itertools.pairwise(body):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)
            ):
                docs[field.target.id] = " ".join(doc.value.value.replace("``", "").split())
    return docs


def mutable_twin(cls: type) -> type:
    """A plain (mutable) dataclass with ``cls``'s fields: the same names, types and defaults, each field's docstring
    as its ``help`` metadata (``%`` escaped for argparse), the form Hugging Face's (and TRL's) argument parser reads.
    A config that subclasses it takes ``cls``'s flags as ``cls`` declares them, and builds ``cls`` with
    :func:`twin_values`."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if f.init:
            help_text = docs.get(f.name, "").replace("%", "%%")
            fields.append((f.name, hints[f.name], dataclasses.field(default=f.default, metadata={"help": help_text})))
    twin = dataclasses.make_dataclass(f"{cls.__name__}Fields", fields)
    twin.__module__ = cls.__module__
    return twin


def twin_values(cls: type[T], values: object) -> T:
    """An instance of the dataclass ``cls`` from the same-named attributes of ``values`` (see :func:`mutable_twin`)."""
    return cls(**{f.name: getattr(values, f.name) for f in dataclasses.fields(cls) if f.init})


def _comma_separated(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _flag_type(hint: Any) -> tuple[Any, dict[str, Any]]:
    """The argparse ``type``/``choices``/``action`` for a field's type hint."""
    if get_origin(hint) in (Union, types.UnionType):
        (hint,) = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        return type(choices[0]), {"choices": choices}
    if get_origin(hint) is tuple:
        return _comma_separated, {}
    if get_origin(hint) is list:
        return get_args(hint)[0], {"action": "append"}
    if hint is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    return hint, {}


def add_fields(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    skip: Iterable[str] = (),
    required: Iterable[str] = (),
) -> None:
    """Add a ``--flag`` per field of the dataclass ``cls``; its docstring is the help, its default shown.

    A field without a default is a required flag, and so is one named in ``required`` (a
    field one command needs and another may leave out, like ``--index``).
    """
    required = set(required)
    hints, docs = get_type_hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        kind, extra = _flag_type(hints[f.name])
        if kind is not None:
            extra["type"] = kind
        help_text = docs.get(f.name, f.name.replace("_", " ")).replace("%", "%%")  # argparse formats help with %
        flag = "--" + f.name.replace("_", "-")
        if f.name in required or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
            parser.add_argument(flag, required=True, help=help_text, **extra)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if default not in (None, (), "") and "default" not in help_text:
            shown = ",".join(default) if isinstance(default, tuple) else default
            help_text += f" (default: {shown})"
        parser.add_argument(flag, default=default, help=help_text, **extra)


def cli_flags(options: Mapping[str, Any]) -> list[str]:
    """Options as command-line flags (``True`` is a bare switch), to start a server with them.

    >>> cli_flags({"max_model_len": 2048, "enforce_eager": True})
    ['--max-model-len=2048', '--enforce-eager']
    """
    return [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in options.items()]


def check_at_least_one(values: object, *names: str) -> None:
    """Refuse a field of ``values`` (a flags dataclass) below 1, naming its flag; None is left to its default.

    >>> check_at_least_one(argparse.Namespace(batch_size=0), "batch_size")
    Traceback (most recent call last):
    ValueError: --batch-size must be at least 1, got 0
    """
    for name in names:
        if (value := getattr(values, name)) is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def from_args(cls: type[T], args: argparse.Namespace, **values: Any) -> T:
    """An instance of the dataclass ``cls`` from the parsed flags :func:`add_fields` added (``values`` win)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(args, f.name)}
    return cls(**{**given, **values})


def show_logs(stream: TextIO = sys.stdout) -> None:
    """Show the library's progress lines (the ``research`` loggers, INFO and up) on ``stream``, one per line."""
    logger = logging.getLogger("research")
    if not logger.handlers:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def run_command(prog: str, command: Callable[[], Any]) -> int:
    """Run a command's body; a user error (bad value, missing file) is one line on stderr and exit 2."""
    try:
        command()
    except USER_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0
