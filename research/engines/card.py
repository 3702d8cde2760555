"""The checkpoint card, ``research.json`` next to the weights: how a checkpoint must be prompted.

``research-train`` writes it into every checkpoint (and the test bed into its models):
the prompt template and the search protocol it was trained with. ``research-serve``,
``research-eval`` and ``research-train`` read it when ``--template`` or ``--protocol`` is
``auto``; without a card, the released checkpoints' names decide.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from research.protocol import ProtocolName, get_protocol
from research.protocol.templates import TemplateName

CARD = "research.json"

TemplateChoice = Literal["auto", "base", "instruct"]
"""What a user passes as ``--template``; ``auto`` reads the card (see :func:`resolve_template`)."""
ProtocolChoice = Literal["auto", ProtocolName]
"""What a user passes as ``--protocol``; ``auto`` reads the card (see :func:`resolve_protocol`)."""
NAMED: dict[str, ProtocolName] = {"searchr1": "search-r1", "search-r1": "search-r1", "recall": "recall"}
"""Name fragments of released checkpoints (``PeterJinGo/SearchR1-*``, ``agentrl/ReCall-*``); the rest are ReSearch."""


@dataclass(frozen=True, kw_only=True)
class ModelArgs:
    """The checkpoint a command runs and the template it was trained with (``research-serve``, ``research-eval``)."""

    model: str | None = None
    """checkpoint path or Hugging Face id"""
    template: TemplateChoice = "auto"
    """prompt template the model was trained with (auto: its research.json, else 'instruct' in the name)"""
    protocol: ProtocolChoice = "auto"
    """search protocol the model was trained with (auto: its research.json, else its name: SearchR1-*, ReCall-*)"""

    @property
    def search_protocol(self) -> ProtocolName:
        """:attr:`protocol`, with ``auto`` resolved (:func:`resolve_protocol`)."""
        return resolve_protocol(self.protocol, self.model)

    @property
    def prompt_template(self) -> TemplateName:
        """:attr:`template`, with ``auto`` resolved (:func:`resolve_template`)."""
        return resolve_template(self.template, self.model, self.search_protocol)


def write_card(folder: str | Path, template: TemplateName, protocol: ProtocolName = "research") -> None:
    """Write the card for a checkpoint trained with ``template`` and ``protocol``."""
    (Path(folder) / CARD).write_text(json.dumps({"template": template, "protocol": protocol}) + "\n")


def read_card(model: str | Path) -> dict[str, str]:
    """The checkpoint's card ({} when it has none, as a Hugging Face id has not here)."""
    card = Path(model) / CARD
    return json.loads(card.read_text()) if card.is_file() else {}


def default_protocol(model: str | Path) -> ProtocolName:
    """The protocol a checkpoint was trained with: its card's, else the one its name says (ReSearch by default)."""
    card = read_card(model)
    if "protocol" in card:
        try:
            return get_protocol(card["protocol"]).name  # type: ignore[return-value]
        except ValueError as e:
            raise ValueError(f"{Path(model) / CARD}: {e}") from None
    name = Path(str(model)).name.lower()
    return next((protocol for fragment, protocol in NAMED.items() if fragment in name), "research")


def default_template(model: str | Path, protocol: ProtocolName = "research") -> TemplateName:
    """The template a checkpoint was trained with.

    Its card says; without one, Search-R1 checkpoints use the chat template (its training
    applied the tokenizer's whenever it had one, and Qwen2.5 base tokenizers do); for the
    others names with "instruct" use the chat template and the rest the base template, as
    ReSearch's released checkpoints are named. ReCall writes its ChatML by hand either way.
    """
    card = read_card(model)
    if "template" in card:
        return card["template"]  # type: ignore[return-value]
    return "instruct" if protocol == "search-r1" or "instruct" in str(model).lower() else "base"


def resolve_protocol(protocol: ProtocolChoice, model: str | Path | None) -> ProtocolName:
    """``protocol`` unless it is ``auto``; then the card's or the name's (``research`` when there is no model)."""
    if protocol != "auto":
        return protocol
    return default_protocol(model) if model else "research"


def resolve_template(
    template: TemplateChoice, model: str | Path | None, protocol: ProtocolName = "research"
) -> TemplateName:
    """``template`` unless it is ``auto``; then the card's (``base`` when there is no model to read)."""
    if template != "auto":
        return template
    return default_template(model, protocol) if model else "base"
