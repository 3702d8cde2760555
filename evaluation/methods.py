"""The evaluated methods: ``research`` (the shared search loop) and the paper's baselines.

All run on the same engine and retriever. Baseline prompts follow FlashRAG, whose
implementations the paper's baseline numbers come from:

* ``naive-generation``: the question alone ("answer from your own knowledge");
* ``naive-rag``: top-5 passages for the question in the prompt;
* ``iter-retgen`` (Shao et al., 2023): 3 rounds; each retrieves with the question plus the
  previous round's answer and answers again from those passages;
* ``ircot`` (Trivedi et al., 2023): one chain-of-thought sentence per step, each step
  retrieving with the latest sentence and adding new passages, until a sentence says
  "So the answer is" or 5 steps are done.

Instruct models see the prompts through their chat template (system + user turn);
base models as one string ending in ``Answer:``. Baseline answers are the text after
"So the answer is", else the last ``\\boxed{}`` if any, else the first line.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from research.clients.client import AsyncClient
from research.engines import collect
from research.protocol import (
    GREEDY,
    RESEARCH,
    Engine,
    LoopLimits,
    Protocol,
    Retriever,
    SamplingOptions,
    TemplateName,
    check_format,
    last_boxed,
    run_search_loop,
)
from research.protocol.templates import eos_token_ids
from research.questions import Example
from research.wire import DEFAULT_K, Passage

ITER_RETGEN_ROUNDS = 3
IRCOT_MAX_STEPS = 5
BASELINE_MAX_TOKENS = 64
"""Per generation of a baseline: a short answer or one thought (FlashRAG's default is 32)."""
_SO_ANSWER = re.compile(r"so the answer is[:\s]*(.*)", re.IGNORECASE | re.DOTALL)

NAIVE_SYSTEM = (
    "Answer the question based on your own knowledge. Only give me the answer and do not output any other words."
)
RAG_SYSTEM = (
    "Answer the question based on the given document. Only give me the answer and do not output any other words.\n"
    "The following are given documents.\n\n{reference}"
)
IRCOT_SYSTEM = (
    "You serve as an intelligent assistant, adept at facilitating users through complex, multi-hop reasoning "
    "across multiple documents. This task is illustrated through demonstrations, each consisting of a document set "
    "paired with a relevant question and its multi-hop reasoning thoughts. Your task is to generate one thought "
    "for the current step, DON'T generate the whole thoughts at once! If you reach what you believe to be the "
    'final step, start with "So the answer is:".\n\n{reference}'
)


@dataclass(slots=True)
class Prediction:
    """What a method answered, and how it got there."""

    answer: str
    response: str
    """Everything the model generated (and, for ``research``, the result blocks)."""
    queries: list[str] = field(default_factory=list)
    response_tokens: int = 0
    """Tokens the model generated (retrieved tokens excluded)."""
    well_formed: bool | None = None
    """ReSearch format check (``research`` only)."""
    cut_off: bool = False
    """The response ran out of its token budget (``length``): it predicts "" whatever it wrote, as the
    reference evaluation does (``over_length_flag`` in ReCall's ``ReSearchPipeline``)."""


@dataclass(frozen=True, slots=True)
class Setup:
    """What every method runs on."""

    engine: Engine | None
    """None when only a running ``research-serve`` is evaluated (:class:`ServedResearch`)."""
    retriever: Retriever | None
    template: TemplateName = "base"
    sampling: SamplingOptions = GREEDY
    max_tokens: int = 8192
    """``research``: the response budget, model and retrieved tokens together."""
    k: int = DEFAULT_K
    protocol: Protocol = RESEARCH
    """``research``: the protocol the model was trained with (its prompt, loop, answer extraction)."""


def baseline_answer(text: str) -> str:
    r"""The answer in a baseline's free-form output.

    >>> baseline_answer("Paris is big. So the answer is: Paris.")
    'Paris.'
    >>> baseline_answer(r"<answer> \boxed{Rome} </answer>"), baseline_answer(" Oslo\nmore")
    ('Rome', 'Oslo')
    """
    if match := _SO_ANSWER.search(text):
        return match.group(1).strip().split("\n")[0].strip()
    if (boxed := last_boxed(text)) is not None:
        return boxed.strip()
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def reference(passages: Sequence[Any]) -> str:
    """Passages as FlashRAG lists them: ``Doc i(Title: t) text``."""
    lines = []
    for i, p in enumerate(passages, 1):
        title, _, text = str(getattr(p, "contents", p)).partition("\n")
        lines.append(f"Doc {i}(Title: {title.strip(chr(34))}) {text}")
    return "\n".join(lines)


def prompt_ids(setup: Setup, system: str, user: str) -> list[int]:
    """Token ids of a baseline prompt in the model's template."""
    tok = setup.engine.tokenizer
    if setup.template == "instruct":
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))
    return list(tok.encode(f"{system}\n\n{user}\nAnswer:", add_special_tokens=False))


async def generate(setup: Setup, ids: list[int], stop: Sequence[str] = ()) -> tuple[str, int]:
    """Generated text (up to EOS or a stop string) and its token count."""
    out = await collect(setup.engine.generate(ids, max_tokens=BASELINE_MAX_TOKENS, stop=stop, sampling=setup.sampling))
    eos = set(eos_token_ids(setup.engine.tokenizer))
    return out.text, sum(t not in eos for t in out.token_ids)


async def search(setup: Setup, query: str) -> list[Passage]:
    return (await setup.retriever.search([query], k=setup.k)).passages[0]


async def research(setup: Setup, ex: Example) -> Prediction:
    """The search-trained model with the shared search loop, in its protocol (ReSearch by default)."""
    tok = setup.engine.tokenizer
    prompt = list(tok.encode(setup.protocol.render_prompt(ex.question, setup.template, tok)))
    traj = await run_search_loop(
        setup.engine,
        setup.retriever,
        prompt,
        limits=LoopLimits(max_tokens=setup.max_tokens, k=setup.k),
        sampling=setup.sampling,
        protocol=setup.protocol,
    )
    cut_off = traj.finish_reason == "length"
    return Prediction(
        answer="" if cut_off else traj.answer or "",
        response=traj.text,
        queries=[s.query for s in traj.searches],
        response_tokens=traj.mask.count(1),
        well_formed=traj.well_formed,
        cut_off=cut_off,
    )


async def naive_generation(setup: Setup, ex: Example) -> Prediction:
    text, n = await generate(setup, prompt_ids(setup, NAIVE_SYSTEM, f"Question: {ex.question}"))
    return Prediction(baseline_answer(text), text, response_tokens=n)


async def naive_rag(setup: Setup, ex: Example) -> Prediction:
    passages = await search(setup, ex.question)
    system = RAG_SYSTEM.format(reference=reference(passages))
    text, n = await generate(setup, prompt_ids(setup, system, f"Question: {ex.question}"))
    return Prediction(baseline_answer(text), text, queries=[ex.question], response_tokens=n)


async def iter_retgen(setup: Setup, ex: Example) -> Prediction:
    answer, queries, total, text = "", [], 0, ""
    for _ in range(ITER_RETGEN_ROUNDS):
        query = f"{ex.question} {answer}".strip()
        queries.append(query)
        system = RAG_SYSTEM.format(reference=reference(await search(setup, query)))
        text, n = await generate(setup, prompt_ids(setup, system, f"Question: {ex.question}"))
        answer, total = baseline_answer(text), total + n
    return Prediction(answer, text, queries=queries, response_tokens=total)


async def ircot(setup: Setup, ex: Example) -> Prediction:
    passages: dict[str, Any] = {}
    thoughts: list[str] = []
    queries, total = [ex.question], 0
    for p in await search(setup, ex.question):
        passages.setdefault(str(getattr(p, "contents", p)), p)
    for step in range(IRCOT_MAX_STEPS):
        system = IRCOT_SYSTEM.format(reference=reference(list(passages.values())))
        user = f"Question: {ex.question}\nThought: {' '.join(thoughts)}".rstrip()
        text, n = await generate(setup, prompt_ids(setup, system, user), stop=("\n",))
        total += n
        thought = text.strip()
        thoughts.append(thought)
        if _SO_ANSWER.search(thought) or not thought or step == IRCOT_MAX_STEPS - 1:
            break
        queries.append(thought)
        for p in await search(setup, thought):
            passages.setdefault(str(getattr(p, "contents", p)), p)
    response = " ".join(thoughts)
    return Prediction(baseline_answer(response), response, queries=queries, response_tokens=total)


@dataclass(frozen=True, slots=True)
class ServedResearch:
    """``research`` through a running ``research-serve`` (its own engine and index), via :class:`AsyncClient`."""

    client: AsyncClient

    async def __call__(self, setup: Setup, ex: Example) -> Prediction:
        reply = await self.client.ask(
            ex.question,
            max_tokens=setup.max_tokens,
            temperature=setup.sampling.temperature,
            top_p=setup.sampling.top_p,
            search_top_k=setup.k,
            extra_body={"reasoning_format": "raw"},
        )
        cut_off = reply.finish_reason == "length"
        return Prediction(
            answer="" if cut_off else reply.answer or "",
            response=reply.content,
            queries=[s.query for s in reply.searches],
            response_tokens=reply.usage.completion_tokens if reply.usage else 0,
            well_formed=bool(check_format(reply.content)),
            cut_off=cut_off,
        )


Method = Callable[[Setup, Example], Awaitable[Prediction]]

METHODS: dict[str, Method] = {
    "research": research,
    "naive-generation": naive_generation,
    "naive-rag": naive_rag,
    "iter-retgen": iter_retgen,
    "ircot": ircot,
}
"""Every method by its CLI name, in the paper's table order (baselines after ``research``)."""
