"""Passage corpora as files: wiki-18's jsonl and DPR's tsv, plain or gzipped, read lazily."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from research.wire import Passage


def _open(path: str | Path, *, text: bool = True, **kwargs: Any) -> Any:
    """A corpus file opened for reading (UTF-8 text or bytes); ``.gz`` files are decompressed as they are read."""
    opener = gzip.open if Path(path).suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8", **kwargs) if text else opener(path, "rb")


def _format(path: str | Path) -> str:
    """The corpus format's suffix, looking through ``.gz``."""
    suffixes = Path(path).suffixes
    return suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) > 1 else Path(path).suffix


def read_jsonl(path: str | Path) -> Iterator[Passage]:
    """Passages of a wiki-18 jsonl file (one ``{"id", "contents"}`` object a line)."""
    with _open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict) or not isinstance(row.get("id"), str | int):
                    raise ValueError(f"{path}:{n}: not a wiki-18 passage (an object with a string or integer 'id')")
                if not isinstance(row.get("contents"), str):
                    got = json.dumps(row.get("contents"))[:40]
                    raise ValueError(f"{path}:{n}: 'contents' must be a string, got {got}")
                yield Passage(str(row["id"]), row["contents"])


def read_tsv(path: str | Path) -> Iterator[Passage]:
    """Passages of DPR's ``psgs_w100.tsv`` (``id  text  title`` with a header row)."""
    with _open(path, newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:3]] != ["id", "text", "title"]:
            raise ValueError(f"{path}: expected DPR's header 'id<TAB>text<TAB>title', got {header}")
        for n, row in enumerate(rows, 2):
            if len(row) < 3:
                raise ValueError(f"{path}:{n}: expected 3 tab-separated columns, got {len(row)}")
            yield Passage(row[0], f'"{row[2]}"\n{row[1]}')


def read_corpus(path: str | Path) -> Iterator[Passage]:
    """Stream a corpus file: wiki-18 ``.jsonl`` or DPR ``.tsv`` (either gzipped or not), chosen by its suffix."""
    suffix = _format(path)
    if suffix in {".jsonl", ".json"}:
        return read_jsonl(path)
    if suffix == ".tsv":
        return read_tsv(path)
    raise ValueError(f"{path}: unknown corpus format {suffix!r}; use wiki-18 .jsonl or DPR .tsv (or .gz of either)")


def count_lines(path: str | Path) -> int:
    """Rows in a corpus file (for the progress bar), counted in large binary blocks."""
    with _open(path, text=False) as f:
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
    return lines - (1 if _format(path) == ".tsv" else 0)
