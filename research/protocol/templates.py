"""Prompt templates of the released ReSearch checkpoints, verbatim (arXiv 2503.19470).

A checkpoint only behaves when it sees the prompt it was trained on, so the two
strings below are byte-for-byte those of the reference implementation:

* ``base``: the whole prompt is one string, no chat template
  (``agentrl/ReSearch-Qwen-32B``).
* ``instruct``: the tokenizer's chat template with :data:`INSTRUCT_SYSTEM` as the
  system turn and the question as the user turn (``agentrl/ReSearch-Qwen-*-Instruct``).

Generation ends at either Qwen end-of-sequence token, whichever template is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

TemplateName = Literal["base", "instruct"]
TEMPLATES: tuple[TemplateName, ...] = ("base", "instruct")

_TAGS_SENTENCE = (
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags respectively, and the search query and result are enclosed within <search> </search> and "
    "<result> </result> tags respectively. For example, <think> This is the reasoning process. "
    "</think> <search> search query here </search> <result> search result here </result> <think> "
    "This is the reasoning process. </think> <answer> The final answer is \\[ \\boxed{answer here} "
    "\\] </answer>. In the last part of the answer, the final exact answer is enclosed within "
    "\\boxed{} with latex format."
)

BASE_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the assistant solves "
    "it. The assistant first thinks about the reasoning process in the mind and then provides the "
    "user with the answer. During thinking, the assistant can invoke the wikipedia search tool to "
    "search for fact information about specific topics if needed. " + _TAGS_SENTENCE + " User: {question}. Assistant:"
)
"""The base-model prompt; ``{question}`` is its only placeholder."""

INSTRUCT_SYSTEM = (
    "You are a helpful assistant that can solve the given question step by step with the help of "
    "the wikipedia search tool. Given a question, you need to first think about the reasoning "
    "process in the mind and then provide the answer. During thinking, you can invoke the "
    "wikipedia search tool to search for fact information about specific topics if needed. " + _TAGS_SENTENCE
)
"""The system message of the instruct models."""

EOS_TOKENS = ("<|im_end|>", "<|endoftext|>")
"""Either ends a response, for both templates (Qwen2.5's chat and document ends)."""


class ChatTokenizer(Protocol):
    """The slice of a Hugging Face tokenizer the templates need."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def convert_tokens_to_ids(self, tokens: Any) -> Any: ...

    def convert_ids_to_tokens(self, ids: Any) -> Any: ...


def instruct_messages(question: str) -> list[dict[str, str]]:
    """The chat turns an instruct checkpoint expects for ``question``.

    >>> [m["role"] for m in instruct_messages("Who?")]
    ['system', 'user']
    """
    return [{"role": "system", "content": INSTRUCT_SYSTEM}, {"role": "user", "content": question}]


def render_prompt(question: str, template: TemplateName, tokenizer: ChatTokenizer | None = None) -> str:
    """The full prompt text for ``question`` under ``template``.

    The base template needs no tokenizer; the instruct one renders through the
    tokenizer's own chat template (with the generation prompt appended).

    >>> render_prompt("Who wrote Hamlet?", "base").endswith("User: Who wrote Hamlet?. Assistant:")
    True
    """
    if template == "base":
        return BASE_TEMPLATE.replace("{question}", question)
    if template == "instruct":
        return through_chat_template(instruct_messages(question), tokenizer)
    raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")


def through_chat_template(messages: list[dict[str, str]], tokenizer: ChatTokenizer | None) -> str:
    """``messages`` through the tokenizer's own chat template, with the generation prompt appended."""
    if tokenizer is None:
        raise ValueError("the instruct template renders through a tokenizer's chat template; pass tokenizer=")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_base_conversation(turns: Sequence[tuple[str, str]]) -> str:
    """The base template over a whole conversation of ``(role, text)`` turns ending with the user's question.

    The template frames "a conversation between User and Assistant", so earlier turns are
    written in its own labels: ``User: {text}.`` and ``Assistant: {text}``; a system or
    developer message goes where it stands, unlabelled, after the template's instructions.
    One user turn is exactly :func:`render_prompt`'s base prompt.

    >>> render_base_conversation([("user", "Who?")]) == render_prompt("Who?", "base")
    True
    >>> render_base_conversation([("user", "Who?"), ("assistant", "Ann."), ("user", "Where?")])[-52:]
    'User: Who?. Assistant: Ann. User: Where?. Assistant:'
    """
    head = BASE_TEMPLATE.removesuffix(" User: {question}. Assistant:")
    labels = {"user": " User: {}.", "assistant": " Assistant: {}", "system": " {}", "developer": " {}"}
    body = "".join(labels[role].format(text.strip() if role != "user" else text) for role, text in turns)
    return head + body + " Assistant:"


def eos_token_ids(tokenizer: ChatTokenizer) -> list[int]:
    """Ids of the end-of-sequence tokens this tokenizer knows (see :data:`EOS_TOKENS`)."""
    ids = []
    for token in EOS_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        # An unknown token maps to the unk id (or None): keep only ids that are the token itself.
        if isinstance(token_id, int) and tokenizer.convert_ids_to_tokens(token_id) == token and token_id not in ids:
            ids.append(token_id)
    if not ids:
        raise ValueError(f"the tokenizer has none of the end-of-sequence tokens {EOS_TOKENS}")
    return ids
