r"""Our reward and format check against an oracle of the reference reward, on 20,000 generated responses.

The oracle below is written from the rules of ``re_search.py`` (``src/verl/utils/reward_score/``
on the ``re-search`` branch of Agent-RL/ReCall), what it does rather than how: it reads the
response out of the decoded prompt + response at the assistant marker, checks the format
(``<think>`` pairs, one answer block, the forward ``<search>`` scan, ``\boxed{`` and ``}`` in the
answer), then EOS, then extracts the last box and pays F1 if > 0, else 0.1.

Responses are built from fragments by a seeded generator: a protocol-following skeleton
with random edits (tags dropped, doubled, moved; boxes unclosed, nested, ``\boxed `` with a
space, ``\fbox``; either EOS or none; stray markers), and free soups of fragments.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter

import pytest

from research.protocol import check_format, render_prompt, response_text, reward

N = 20_000
EOS = {"instruct": "<|im_end|>", "base": "<|endoftext|>"}
INSTRUCT_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWho?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
PROMPTS = {"instruct": INSTRUCT_PROMPT, "base": render_prompt("Who?", "base")}


# --- the oracle -----------------------------------------------------------------------------------


def oracle_well_formed(text: str) -> bool:
    if text.count("<think>") != text.count("</think>") or "<think>" not in text:
        return False
    if text.count("<answer>") != 1 or text.count("</answer>") != 1:
        return False
    at = 0
    while True:
        s = text.find("<search>", at)
        if s < 0:
            break
        r = text.find("<result>", s)
        e = text.find("</search>", s)
        if r < 0 or e < 0:
            return False
        re_ = text.find("</result>", r)
        if re_ < 0 or not (s < e < r < re_):
            return False
        at = re_
    a, b = text.index("<answer>"), text.index("</answer>")
    return a < b and "\\boxed{" in text[a:b] and "}" in text[a:b]


def oracle_box(part: str) -> str | None:
    if "\\boxed " in part:
        return part.rsplit("\\boxed ", 1)[1].split("$", 1)[0]
    start = part.rfind("\\boxed")
    if start < 0:
        return None  # \fbox alone never passes the reference's \boxed{ prefix check
    depth = 0
    for i, ch in enumerate(part[start:], start):
        depth += (ch == "{") - (ch == "}")
        if ch == "}" and depth == 0:
            box = part[start : i + 1]
            return box[len("\\boxed{") : -1] if box.startswith("\\boxed{") else None
    return None


def oracle_normalize(s: str) -> str:
    s = "".join(c for c in s.lower() if c not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())


def oracle_f1(pred: str, golds: str | list[str]) -> float:
    best = 0.0
    for gold in [golds] if isinstance(golds, str) else golds:
        p, g = oracle_normalize(pred), oracle_normalize(gold)
        if p != g and ({p, g} & {"yes", "no", "noanswer"}):
            continue
        same = sum((Counter(p.split()) & Counter(g.split())).values())
        if same:
            precision, recall = same / len(p.split()), same / len(g.split())
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def oracle_score(decoded: str, golds: str | list[str], eos: str) -> tuple[float, bool]:
    """(reward, well-formed) of the decoded prompt + response."""
    marker = "<|im_start|>assistant\n" if "<|im_start|>assistant\n" in decoded else "Assistant:"
    response = decoded.split(marker)[1]
    if not oracle_well_formed(response):
        return 0.0, False
    if not response.endswith(eos):
        return 0.0, True
    found = re.search(r"<answer>(.*?)</answer>", response[: -len(eos)].strip(), re.DOTALL)
    box = oracle_box(found.group(1)) if found else None
    if box is None:
        return 0.0, True
    f1 = oracle_f1(box, golds)
    return (f1 if f1 > 0 else 0.1), True


# --- the generator --------------------------------------------------------------------------------

TAGS = ["<think>", "</think>", "<search>", "</search>", "<result>", "</result>", "<answer>", "</answer>"]
BOXES = ["\\boxed{", "\\boxed ", "\\boxed", "\\fbox{", "{", "}", "}}", "$", "\\[", "\\]"]
WORDS = [" Paris", " the Paris", " paris France", " Rome", " Barack Obama", " Obama", " yes", " no", " noanswer", " a"]
MARKERS = ["<|im_end|>", "<|endoftext|>", "Assistant:", "<|im_start|>assistant\n", " ", "\n", "."]
ANSWERS = ["Paris", "paris, France", "Rome", "Barack Obama", "yes", "no", "noanswer", "the", "", "{Paris}", "a {b} c"]
GOLDS: list[str | list[str]] = [
    "Paris", ["Paris"], ["paris", "Paris France"], [], ["yes"], ["no"], ["noanswer"], ["Barack Obama", "Obama"], ["the"]
]  # fmt: skip


def skeleton(rng: random.Random, answer: str) -> list[str]:
    parts = [" <think>", " I need to search.", " </think>"]
    for _ in range(rng.randint(0, 3)):
        parts += [" <search>", rng.choice(WORDS), " </search>", " <result>\n", rng.choice(WORDS), "\n</result>"]
        parts += [" <think>", rng.choice(WORDS), " </think>"]
    odd = ["\\boxed{%s", "\\boxed %s", "\\boxed{x} \\boxed %s", "\\boxed{%s} \\boxed{x", "\\fbox{%s}", "%s"]
    box = rng.choice(["\\boxed{%s}"] * 6 + odd)
    parts += [" <answer>", " The final answer is \\[ ", box % answer, " \\]", " </answer>"]
    return parts


def mutate(rng: random.Random, parts: list[str]) -> list[str]:
    for _ in range(rng.choice([0, 0, 0, 1, 1, 2, 3])):
        i = rng.randrange(len(parts) + 1)
        action = rng.random()
        if action < 0.3 and parts:
            del parts[min(i, len(parts) - 1)]
        elif action < 0.6:
            parts.insert(i, rng.choice(TAGS))
        elif action < 0.8:
            parts.insert(i, rng.choice(BOXES + MARKERS))
        elif parts:
            j = rng.randrange(len(parts))
            parts[min(i, len(parts) - 1)], parts[j] = parts[j], parts[min(i, len(parts) - 1)]
    return parts


def soup(rng: random.Random) -> list[str]:
    pool = TAGS * 3 + BOXES + WORDS + MARKERS
    return [rng.choice(pool) for _ in range(rng.randint(0, 25))]


def responses(seed: int = 20250327):
    rng = random.Random(seed)
    for _ in range(N):
        template = rng.choice(["instruct", "base"])
        answer = rng.choice(ANSWERS)
        parts = mutate(rng, skeleton(rng, answer)) if rng.random() < 0.85 else soup(rng)
        ending = rng.choice([EOS[template]] * 4 + ["", EOS["base" if template == "instruct" else "instruct"]])
        golds = rng.choice([*GOLDS, [answer], [answer, "Rome"], [f"{answer} the Younger"], "Barack Obama Jr"])
        yield template, "".join(parts) + ending, golds


# --- the test -------------------------------------------------------------------------------------


def test_reward_and_format_verdicts_equal_the_reference_on_every_generated_response():
    disagreements, outcomes = [], Counter()
    for template, completion, golds in responses():
        prompt, eos = PROMPTS[template], EOS[template]
        expected_reward, expected_formed = oracle_score(prompt + completion, golds, eos)
        response = response_text(prompt, completion)
        got = reward(response, golds, eos_token=eos), bool(check_format(response))
        if got != (expected_reward, expected_formed):
            disagreements.append((template, completion, golds, got, (expected_reward, expected_formed)))
        outcomes["F1 = 1" if expected_reward == 1 else "0 < F1 < 1" if expected_reward > 0.1 else
                 "format bonus 0.1" if expected_reward == 0.1 else "0, well-formed" if expected_formed else
                 "0, malformed"] += 1  # fmt: skip
    assert not disagreements, f"{len(disagreements)} of {N} disagree, e.g. {disagreements[:3]}"
    # Every outcome is well represented, so the agreement says something about each.
    assert min(outcomes.values()) >= 200 and len(outcomes) == 5, outcomes


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (" <think> a </think> <answer> \\boxed{Paris} </answer><|im_end|>", 1.0),
        (" <think> a </think> <answer> \\boxed{Paris} </answer>", 0.0),  # over length
        (" <think> a </think> <answer> \\boxed{Paris </answer>}<|im_end|>", 0.0),  # unclosed box
        (" <think> a </think> </search> <answer> \\boxed{Paris} </answer><|im_end|>", 1.0),  # stray tag passes
        (" <think> a </think> <answer> \\boxed{x} \\boxed Paris $ </answer><|im_end|>", 1.0),  # a space, then text
        (" <think> a </think> <answer> \\boxed Paris </answer><|im_end|>", 0.0),  # no \boxed{: malformed
        (" <think> a </think> <answer> \\boxed{Paris} \\boxed</answer><|im_end|>", 0.0),  # bare trailing box
        (" <think> a </think> <answer> \\boxed{Paris} \\boxed </answer><|im_end|>", 0.1),  # empty after the space
        (" <answer> \\boxed{Paris} </answer><|im_end|>", 0.0),  # no <think>
    ],
)
def test_named_corners(completion, expected):
    response = response_text(INSTRUCT_PROMPT, completion)
    assert reward(response, ["Paris"], eos_token="<|im_end|>") == expected
    assert oracle_score(INSTRUCT_PROMPT + completion, ["Paris"], "<|im_end|>")[0] == expected
