"""Answer metrics (EM, F1, cover-EM) and the training reward, which calls them.

Normalisation and EM/F1 follow the official HotpotQA script (``hotpot_evaluate_v1.py``),
whose definitions the MuSiQue script (``metrics/answer.py``) shares: lower-case, drop
punctuation, drop the articles a/an/the, collapse white space. Every metric takes the
best score over all gold answers (aliases included).

Where the two official scripts differ, we follow HotpotQA, as the paper does:

* F1 is 0 when either side normalises to ``yes``/``no``/``noanswer`` and they differ
  (MuSiQue has no such rule; its answers are never yes/no).
* F1 is 0 when the normalised prediction or gold is empty (MuSiQue scores an
  empty-vs-empty pair 1).

The reward (training) is the reference code's (``re_search.py`` on the ``re-search``
branch of Agent-RL/ReCall), checked in its order: a malformed response earns 0, one
that did not end with the tokenizer's EOS token 0, one without an extractable box 0;
otherwise the answer's F1 when positive, else 0.1. The paper writes "F1 if F1 > 0"
without the format gate; the released checkpoints were trained with the code, so we
follow the code. Training and evaluation share these metrics, so they can never
disagree on what "correct" means.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from research.protocol.answer import check_format, extract_answer

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPECIAL = frozenset({"yes", "no", "noanswer"})

FORMAT_REWARD = 0.1


def normalize_answer(text: str) -> str:
    """SQuAD/HotpotQA normalisation.

    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _golds(gold: str | Sequence[str]) -> list[str]:
    """Gold answers as a list: a string is one answer; an empty list scores 0 everywhere."""
    return [gold] if isinstance(gold, str) else list(gold)


def _f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if (pred in _SPECIAL or ref in _SPECIAL) and pred != ref:
        return 0.0
    pred_tokens, ref_tokens = pred.split(), ref.split()
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer.

    >>> exact_match("the Beatles", ["Beatles", "The Fab Four"])
    1.0
    """
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _golds(gold)))


def f1_score(prediction: str, gold: str | Sequence[str]) -> float:
    """Token F1, best over gold answers; yes/no/noanswer must match exactly.

    >>> round(f1_score("Barack Obama", "Obama"), 3)
    0.667
    >>> f1_score("yes", "yes sir")
    0.0
    """
    return max((_f1(prediction, g) for g in _golds(gold)), default=0.0)


def cover_exact_match(prediction: str, gold: str | Sequence[str]) -> float:
    """1.0 when a normalised gold answer is a substring of the normalised prediction ("acc").

    >>> cover_exact_match("It was Paris, France", "paris")
    1.0
    """
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(g) in pred for g in _golds(gold)))


def reward(response: str, gold: str | Sequence[str], *, eos_token: str) -> float:
    r"""ReSearch reward of one response, as the reference computes it.

    ``response`` is the text after the prompt with the EOS token's text included when
    generation ended with it (see :func:`research.protocol.answer.response_text`);
    ``eos_token`` is the tokenizer's own (``<|im_end|>`` for Qwen2.5 instruct,
    ``<|endoftext|>`` for base). In order: malformed -> 0; not ended with ``eos_token``
    -> 0; no extractable box -> 0; else F1 if > 0, else 0.1.

    >>> reward(r"<think>a</think><answer>\boxed{Paris}</answer><|im_end|>", "Paris", eos_token="<|im_end|>")
    1.0
    >>> reward(r"<think>a</think><answer>\boxed{Rome}</answer><|im_end|>", "Paris", eos_token="<|im_end|>")
    0.1
    >>> reward(r"<think>a</think><answer>\boxed{Paris}</answer>", "Paris", eos_token="<|im_end|>")
    0.0
    """
    if not eos_token:
        raise ValueError("eos_token must be the tokenizer's end-of-sequence token text, not empty")
    if not check_format(response) or not response.endswith(eos_token):
        return 0.0
    answer = extract_answer(response[: -len(eos_token)])
    if answer is None:
        return 0.0
    f1 = f1_score(answer, gold)
    return f1 if f1 > 0 else FORMAT_REWARD
