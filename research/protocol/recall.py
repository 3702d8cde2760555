r"""ReCall (Agent-RL/ReCall at aaf16b3, checkpoints ``agentrl/ReCall-*``): tools as JSON schemas, calls as JSON.

Byte for byte what its code builds (``src/re_call/inference/re_call.py``, the rollout of
``src/verl/workers/rollout/vllm_rollout/vllm_rollout_spmd.py``, the search tool of
``data/prepare_musique_recall.py`` run by ``scripts/serving/sandbox.py``, and
``src/verl/utils/reward_score/re_call.py``):

* the prompt is ChatML written out by hand: the system text with the tools as
  ``json.dumps(tools, indent=4)``, the question as the user turn, and ``<think>`` opening the
  assistant turn (the same for base and instruct checkpoints);
* the model writes any number of ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` and
  ends its turn (EOS, at most 512 tokens); the calls come back in a user turn of
  ``<tool_response>{call}\n{result}\n</tool_response>`` followed by a new assistant turn
  opened with ``<think>``; a turn without calls is the answer;
* the hosted tool is ``wikipedia_search(query, top_n=5)``: its result text is the sandbox's,
  ``result: \n`` + the passages' contents joined by blank lines; a call that does not parse
  gets ``Parse tool call failed: ...``; a call the sandbox would fail gets ``error: \n...``
  with Python's own message;
* the answer is the last ``\boxed`` of the last complete assistant turn with every
  ``<think>...</think>`` removed (``''`` when there is none, as its evaluation writes); the
  reward checks EOS, then every assistant turn's format, then pays F1 (0.1 when it is 0).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from typing import Any

from research.protocol.answer import last_boxed
from research.protocol.metrics import FORMAT_REWARD, f1_score
from research.protocol.profile import DONE, Call, Protocol, Step, TurnEnd
from research.protocol.templates import ChatTokenizer, TemplateName
from research.wire import MAX_K, Passage

SYSTEM = (
    "In this environment you have access to a set of tools you can use to assist with the user query. You may "
    "perform multiple rounds of function calls. In each round, you can call one or more functions. \nHere are "
    "available functions in JSONSchema format: \n```json\n{func_schemas}\n```\n\nIn your response, you need to "
    "first think about the reasoning process in the mind and then conduct function calling to get the information "
    "or perform the actions if needed. The reasoning process and function calling are enclosed within <think> "
    "</think> and <tool_call> </tool_call> tags. The results of the function calls will be given back to you after "
    "execution, and you can continue to call functions until you get the final answer for the user's question. "
    "Finally, if you have got the answer, enclose it within \\boxed{} with latex format and do not continue to call "
    "functions, i.e., <think> Based on the response from the function call, I get the weather information. "
    "</think> The weather in Beijing on 2025-04-01 is \\[ \\boxed{20C} \\].\n\nFor each function call, return a "
    'json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": '
    '<function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
"""``ReCall.system_prompt`` after its ``str.format`` (so ``\\boxed{}``, not ``\\boxed{{}}``)."""

ASSISTANT = "<|im_start|>assistant\n"
ASSISTANT_PREFIX = ASSISTANT + "<think>"
"""How every assistant turn opens: the model starts inside ``<think>``."""
EOS = "<|im_end|>"

SEARCH_TOOL = "wikipedia_search"
SEARCH_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": SEARCH_TOOL,
        "description": "Search Wikipedia for a given query.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "Query to search for."},
                "top_n": {
                    "type": "integer",
                    "description": "Number of results to return. The default value is 5.",
                    "default": 5,
                },
            },
            "required": ["query"],
        },
    },
}
"""The hosted search tool as ``prepare_musique_recall.py`` describes it to the model."""

_TOOL_CALL = re.compile(r"<tool_call>((?:(?!</tool_call>).)*)</tool_call>", re.DOTALL)
_TURN = re.compile(r"<\|im_start\|>assistant\n(.*?)<\|im_end\|>", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def wikipedia_search(query: str, top_n: int = 5) -> tuple[str, int]:
    """The hosted tool's signature: called with the model's arguments, Python words any mismatch as the sandbox did."""
    return query, top_n


def tool_calls(turn: str) -> list[str]:
    """``extract_tool_calls``: the stripped bodies of ``<tool_call>...</tool_call>``; none if tags are unbalanced."""
    opens = [m.start() for m in re.finditer("<tool_call>", turn)]
    closes = [m.start() for m in re.finditer("</tool_call>", turn)]
    if len(opens) != len(closes) or any(start >= end for start, end in zip(opens, closes, strict=True)):
        return []
    return [m.group(1).strip() for m in _TOOL_CALL.finditer(turn)]


def sandbox_error(error: Exception) -> str:
    """The sandbox's text for a call that raised ``error``."""
    return f"error: \n{error}\n".strip()


def read_call(text: str) -> Call:
    """One tool call as the reference rollout and its sandbox read it (``format_tool_call``, then ``exec``)."""
    try:
        call = json.loads(text)
        name = call["name"]
        arguments = call.get("arguments", {})
        source = f"{name}({', '.join(f'{key}={value!r}' for key, value in arguments.items())})"
    except Exception as e:
        return Call(text, reply=f"Parse tool call failed: {e}")
    try:
        with warnings.catch_warnings():  # "'int' object is not callable; perhaps you missed a comma?"
            warnings.simplefilter("ignore")
            compile(f"response = {source}", "<call>", "exec")  # compiled, never run
    except SyntaxError as e:
        return Call(text, reply=sandbox_error(e))
    if name != SEARCH_TOOL:  # a client's function, or the sandbox's NameError when the request has none of that name
        undefined = sandbox_error(NameError(f"name {name!r} is not defined"))
        return Call(text, reply=undefined, name=str(name), arguments=arguments)
    try:
        query, top_n = wikipedia_search(**arguments)
    except TypeError as e:
        return Call(text, reply=sandbox_error(e))
    if not isinstance(query, str) or not isinstance(top_n, int) or isinstance(top_n, bool):
        return Call(text, reply=sandbox_error(TypeError(f"{SEARCH_TOOL} takes a string query and an integer top_n")))
    if query == "":
        return Call(text, reply="result: \ninvalid query")
    return Call(text, query=query, k=max(0, min(top_n, MAX_K)))


def _last_turn(text: str) -> str:
    """The last complete assistant turn of ``text``, stripped and without its ``<think>`` blocks."""
    turns = _TURN.findall(text)
    return _THINK.sub("", turns[-1].strip()).strip() if turns else ""


def _turns(text: str) -> list[str]:
    """``validate_template_format``'s scan: every assistant turn that has its ``<|im_end|>``, stripped."""
    out, at = [], 0
    while (start := text.find(ASSISTANT, at)) >= 0 and (end := text.find(EOS, start)) >= 0:
        out.append(text[start + len(ASSISTANT) : end].strip())
        at = end + len(EOS)
    return out


def _turn_well_formed(turn: str) -> bool:
    if turn.count("<think>") != turn.count("</think>") or "<think>" not in turn:
        return False
    if turn.count("<tool_call>") != turn.count("</tool_call>"):
        return False
    at = 0
    while (start := turn.find("<tool_call>", at)) >= 0 and (end := turn.find("</tool_call>", start)) >= 0:
        body = turn[start + len("<tool_call>") : end].strip()
        if '"name"' not in body or '"arguments"' not in body:
            return False
        try:
            json.loads(body)
        except json.JSONDecodeError:
            return False
        at = end + len("</tool_call>")
    return True


class ReCall(Protocol):
    name = "recall"
    stop = ()
    default_k = 5
    max_turn_tokens = 512
    eos_in_text = True
    takes_tools = True
    call_tags = ("<tool_call>", "</tool_call>")

    def _render(self, question: str, template: TemplateName, tokenizer: ChatTokenizer | None, tools: Any) -> str:
        """``init_prompt`` (both templates: the reference writes ChatML by hand); ``tools`` default to the search."""
        schemas = json.dumps(list(tools) if tools is not None else [SEARCH_SCHEMA], indent=4)
        system = SYSTEM.replace("{func_schemas}", schemas)
        return f"<|im_start|>system\n{system}{EOS}\n<|im_start|>user\n{question}{EOS}\n{ASSISTANT_PREFIX}"

    def format_result(self, passages: Sequence[Passage] | Sequence[str]) -> str:
        """The search tool's result text: the contents joined by blank lines, as the sandbox prints it."""
        joined = "".join(f"{p if isinstance(p, str) else p.contents}\n\n" for p in passages).strip()
        return f"result: \n{joined}" if joined else ""

    def format_tool_results(self, tool_calls: Sequence[str], results: Sequence[str]) -> str:
        """``cat_tool_results`` after the turn's ``<|im_end|>``: a user turn of responses, then ``<think>``.

        Calls and results are paired as the reference pairs them (``zip``: the shorter list wins).
        """
        pairs = zip(tool_calls, results, strict=False)
        responses = "".join(f"<tool_response>{call}\n{result}\n</tool_response>\n" for call, result in pairs)
        return f"\n<|im_start|>user\n{responses}{EOS}\n{ASSISTANT_PREFIX}"

    def extract_answer(self, response: str) -> str:
        answer = _last_turn(ASSISTANT_PREFIX + response)
        box = last_boxed(answer) if answer else None
        return box if box is not None else ""

    def reward(self, response: str, gold: str | Sequence[str], *, eos_token: str) -> float:
        if not eos_token:
            raise ValueError("eos_token must be the tokenizer's end-of-sequence token text, not empty")
        if not response.endswith(eos_token) or not self.well_formed(response):
            return 0.0
        box = last_boxed(_turns(ASSISTANT_PREFIX + response)[-1])
        if box is None:
            return 0.0
        f1 = f1_score(box, gold)
        return f1 if f1 > 0 else FORMAT_REWARD

    def well_formed(self, response: str) -> bool:
        turns = _turns(ASSISTANT_PREFIX + response)
        return bool(turns) and all(map(_turn_well_formed, turns)) and "\\box" in turns[-1]

    def next_step(self, turn: str, ended: TurnEnd) -> Step:
        if ended != "eos" or not (calls := tool_calls(turn)):
            return DONE
        return Step([read_call(call) for call in calls])

    def reply(self, step: Step, found: Sequence[list[Passage] | None]) -> str:
        results = [
            call.reply if passages is None else self.format_result(passages)
            for call, passages in zip(step.calls, found, strict=True)
        ]
        return self.format_tool_results([call.text for call in step.calls], [r or "" for r in results])
