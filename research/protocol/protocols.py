"""The protocols by name: ``get_protocol("search-r1")``.

>>> get_protocol("recall").name, sorted(PROTOCOLS)
('recall', ['recall', 'research', 'search-r1'])
"""

from __future__ import annotations

from typing import Literal, get_args

from research.protocol.profile import Protocol
from research.protocol.re_search import ReSearch
from research.protocol.recall import ReCall
from research.protocol.search_r1 import SearchR1

ProtocolName = Literal["research", "search-r1", "recall"]
PROTOCOL_NAMES: tuple[ProtocolName, ...] = get_args(ProtocolName)
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (ReSearch(), SearchR1(), ReCall())}
RESEARCH = PROTOCOLS["research"]
"""The default: the ReSearch checkpoints' dialect."""


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; a ValueError naming the choices for any other."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOL_NAMES)}") from None
