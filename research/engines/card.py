"""The checkpoint card, ``research.json`` next to the weights: how a checkpoint must be prompted.

``research-train`` writes it into every checkpoint (and the test bed into its models);
``research-serve``, ``research-eval`` and ``research-train`` read it when ``--template``
is ``auto``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from research.protocol.templates import TemplateName

CARD = "research.json"

TemplateChoice = Literal["auto", "base", "instruct"]
"""What a user passes as ``--template``; ``auto`` reads the card (see :func:`resolve_template`)."""


@dataclass(frozen=True, kw_only=True)
class ModelArgs:
    """The checkpoint a command runs and the template it was trained with (``research-serve``, ``research-eval``)."""

    model: str | None = None
    """checkpoint path or Hugging Face id"""
    template: TemplateChoice = "auto"
    """prompt template the model was trained with (auto: its research.json, else 'instruct' in the name)"""

    @property
    def prompt_template(self) -> TemplateName:
        """:attr:`template`, with ``auto`` resolved (:func:`resolve_template`)."""
        return resolve_template(self.template, self.model)


def write_card(folder: str | Path, template: TemplateName) -> None:
    """Write the card for a checkpoint trained with ``template``."""
    (Path(folder) / CARD).write_text(json.dumps({"template": template}) + "\n")


def default_template(model: str | Path) -> TemplateName:
    """The template a checkpoint was trained with.

    Its card says; without one, names with "instruct" use the chat template and the
    rest the base template, as ReSearch's released checkpoints are named.
    """
    card = Path(model) / CARD
    if card.is_file():
        return json.loads(card.read_text())["template"]
    return "instruct" if "instruct" in str(model).lower() else "base"


def resolve_template(template: TemplateChoice, model: str | Path | None) -> TemplateName:
    """``template`` unless it is ``auto``; then the card's (``base`` when there is no model to read)."""
    if template != "auto":
        return template
    return default_template(model) if model else "base"
