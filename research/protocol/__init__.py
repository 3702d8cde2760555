"""The search protocols, written once: templates, tags, answers, metrics, reward, loop, and the engine contract
the loop drives (:mod:`research.protocol.engine`).

ReSearch's dialect is the default and its functions are exported here by name; every dialect
(ReSearch, Search-R1, ReCall) is a :class:`Protocol` that :func:`get_protocol` returns by name
and the loop takes. Serving, training and evaluation all import from here, so they can never disagree.
"""

from research.protocol.answer import FormatCheck, check_format, extract_answer, last_boxed, response_text
from research.protocol.engine import GREEDY, Chunk, Engine, SamplingOptions
from research.protocol.loop import (
    Finished,
    LoopLimits,
    ModelText,
    ResultBlock,
    Retrieved,
    Retriever,
    Trajectory,
    choice_sampling,
    run_search_loop,
    stream_search_loop,
)
from research.protocol.metrics import cover_exact_match, exact_match, f1_score, normalize_answer, reward
from research.protocol.profile import Call, Protocol, Step
from research.protocol.protocols import PROTOCOL_NAMES, PROTOCOLS, RESEARCH, ProtocolName, get_protocol
from research.protocol.tags import SEARCH_STOP, Segment, TagParser, extract_query, format_result, parse
from research.protocol.templates import (
    BASE_TEMPLATE,
    EOS_TOKENS,
    INSTRUCT_SYSTEM,
    TemplateName,
    eos_token_ids,
    instruct_messages,
    render_base_conversation,
    render_prompt,
)

__all__ = [
    "BASE_TEMPLATE",
    "EOS_TOKENS",
    "GREEDY",
    "INSTRUCT_SYSTEM",
    "PROTOCOLS",
    "PROTOCOL_NAMES",
    "RESEARCH",
    "SEARCH_STOP",
    "Call",
    "Chunk",
    "Engine",
    "Finished",
    "FormatCheck",
    "LoopLimits",
    "ModelText",
    "Protocol",
    "ProtocolName",
    "ResultBlock",
    "Retrieved",
    "Retriever",
    "SamplingOptions",
    "Segment",
    "Step",
    "TagParser",
    "TemplateName",
    "Trajectory",
    "check_format",
    "choice_sampling",
    "cover_exact_match",
    "eos_token_ids",
    "exact_match",
    "extract_answer",
    "extract_query",
    "f1_score",
    "format_result",
    "get_protocol",
    "instruct_messages",
    "last_boxed",
    "normalize_answer",
    "parse",
    "render_base_conversation",
    "render_prompt",
    "response_text",
    "reward",
    "run_search_loop",
    "stream_search_loop",
]
