"""LLM-as-a-Judge: an OpenAI-compatible chat model decides whether a prediction is correct.

The judge (temperature 0) sees the question, the gold answers and the prediction and
must reply with JSON ``{"rationale": "...", "judgement": "correct" | "incorrect"}``.
Transport errors and malformed replies are retried with exponential backoff; a
question the judge never answers properly is recorded as ``None`` (left out of LJ,
and counted in ``summary.json`` as ``judge_failures``). Verdicts are cached in a
jsonl file keyed by judge model, question, golds and prediction, so a rerun (or a
resumed run) never pays for the same verdict twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

DEFAULT_JUDGE_MODEL = "gpt-4o-mini"

JUDGE_PROMPT = """You are grading an answer to a question against the gold answers.
Judge whether the predicted answer means the same as any gold answer (ignore formatting,
capitalisation and extra detail that does not change the meaning).

Question: {question}
Gold answers: {golds}
Predicted answer: {prediction}

Reply with JSON only: {{"rationale": "<one sentence>", "judgement": "correct" or "incorrect"}}"""

_JSON = re.compile(r"\{.*\}", re.DOTALL)


class MalformedVerdict(ValueError):
    """The judge replied, but not with the documented JSON."""


def parse_verdict(reply: str) -> bool:
    """True for ``correct``, False for ``incorrect``; :class:`MalformedVerdict` otherwise.

    >>> parse_verdict('```json\\n{"rationale": "same city", "judgement": "correct"}\\n```')
    True
    """
    match = _JSON.search(reply or "")
    try:
        verdict = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        verdict = None
    judgement = str(verdict.get("judgement", "")).strip().lower() if isinstance(verdict, dict) else ""
    if judgement not in ("correct", "incorrect"):
        raise MalformedVerdict(f"judge reply is not a verdict: {reply[:200]!r}")
    return judgement == "correct"


class Judge:
    """Asks ``model`` at ``client`` (an ``openai.AsyncOpenAI``), with retries and a verdict cache."""

    def __init__(
        self, client: Any, model: str = DEFAULT_JUDGE_MODEL, *, cache: Path, attempts: int = 4, max_wait: float = 8.0
    ) -> None:
        self.client, self.model, self.cache = client, model, cache
        self.attempts, self.max_wait = attempts, max_wait
        self._verdicts: dict[str, bool] = {}
        self._lock = asyncio.Lock()
        if cache.is_file():
            for line in cache.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self._verdicts[row["key"]] = row["correct"]
                except (json.JSONDecodeError, KeyError):  # a line cut by a kill: ask again
                    continue

    def key(self, question: str, golds: Sequence[str], prediction: str) -> str:
        blob = json.dumps([self.model, question, list(golds), prediction])
        return hashlib.sha256(blob.encode()).hexdigest()

    async def _ask(self, question: str, golds: Sequence[str], prediction: str) -> bool:
        prompt = JUDGE_PROMPT.format(question=question, golds=json.dumps(list(golds)), prediction=prediction)
        reply = await self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0.0
        )
        return parse_verdict(reply.choices[0].message.content or "")

    async def __call__(self, question: str, golds: Sequence[str], prediction: str) -> bool | None:
        """The verdict, from the cache when known; None when the judge kept failing."""
        key = self.key(question, golds, prediction)
        if key in self._verdicts:
            return self._verdicts[key]
        import openai

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.5, max=self.max_wait),
            retry=retry_if_exception_type((MalformedVerdict, openai.APIError)),
            reraise=True,
        )
        try:
            correct = await retrying(self._ask, question, golds, prediction)
        except (MalformedVerdict, openai.APIError):
            return None
        async with self._lock:
            self._verdicts[key] = correct
            with self.cache.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "correct": correct}) + "\n")
        return correct
