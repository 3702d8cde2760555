"""Metrics and reward. The oracles below re-derive the official HotpotQA and MuSiQue
definitions independently (per-character regex normalisation, explicit counting)."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research.protocol import cover_exact_match, exact_match, f1_score, normalize_answer, reward


def oracle_normalize(s: str) -> str:
    s = s.lower()
    s = re.sub("[" + re.escape(string.punctuation) + "]", "", s)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return re.sub(r"\s+", " ", s).strip() if s.split() else ""


def oracle_token_f1(pred: str, gold: str, *, hotpot_special: bool) -> float:
    p, g = oracle_normalize(pred), oracle_normalize(gold)
    if hotpot_special and (p in ("yes", "no", "noanswer") or g in ("yes", "no", "noanswer")) and p != g:
        return 0.0
    pt, gt = p.split(), g.split()
    remaining = list(gt)
    common = 0
    for tok in pt:
        if tok in remaining:
            remaining.remove(tok)
            common += 1
    if common == 0:
        return 0.0
    prec, rec = common / len(pt), common / len(gt)
    return 2 * prec * rec / (prec + rec)


WORDS = st.sampled_from(["the", "a", "an", "The", "Paris", "paris,", "yes", "no", "noanswer", "New", "York!", "1999",
                         "Anne", "an-", "théâtre", "U.S.", "'s", " ", "  ", "\t", "x"])  # fmt: skip
ANSWER = st.lists(st.one_of(WORDS, st.text(max_size=4)), max_size=6).map(" ".join)


@settings(max_examples=500, deadline=None)
@given(pred=ANSWER, gold=ANSWER)
def test_normalisation_and_em_match_the_official_definitions(pred, gold):
    assert normalize_answer(pred) == oracle_normalize(pred)
    assert exact_match(pred, gold) == float(oracle_normalize(pred) == oracle_normalize(gold))


@settings(max_examples=500, deadline=None)
@given(pred=ANSWER, gold=ANSWER)
def test_f1_matches_hotpotqa_everywhere_and_musique_off_its_corner_cases(pred, gold):
    assert f1_score(pred, gold) == pytest.approx(oracle_token_f1(pred, gold, hotpot_special=True))
    special = {"yes", "no", "noanswer"}
    p, g = oracle_normalize(pred), oracle_normalize(gold)
    if p and g and p not in special and g not in special:  # where MuSiQue's script agrees by definition
        assert f1_score(pred, gold) == pytest.approx(oracle_token_f1(pred, gold, hotpot_special=False))


@settings(max_examples=300, deadline=None)
@given(pred=ANSWER, golds=st.lists(ANSWER, min_size=1, max_size=4))
def test_every_metric_takes_the_best_gold_and_stays_in_range(pred, golds):
    for metric in (exact_match, f1_score, cover_exact_match):
        score = metric(pred, golds)
        assert score == max(metric(pred, g) for g in golds)
        assert 0.0 <= score <= 1.0
    if exact_match(pred, golds):
        assert cover_exact_match(pred, golds) == 1.0


def test_f1_yes_no_rule():
    assert f1_score("yes", "no") == 0.0
    assert f1_score("Yes.", "yes") == 1.0
    assert f1_score("no way", "no") == 0.0


def test_cover_em_accepts_a_longer_prediction_that_contains_the_gold():
    assert cover_exact_match("He was born in Paris, France.", ["Paris"]) == 1.0
    assert exact_match("He was born in Paris, France.", ["Paris"]) == 0.0


def test_no_gold_answer_scores_zero():
    assert exact_match("x", []) == f1_score("x", []) == cover_exact_match("x", []) == 0.0


WELL_FORMED = r"<think> t </think> <answer> \boxed{%s} </answer><|im_end|>"
EOS = "<|im_end|>"


def test_reward_is_f1_when_the_answer_overlaps():
    assert reward(WELL_FORMED % "Barack Obama", ["Obama"], eos_token=EOS) == pytest.approx(2 / 3)


def test_reward_is_the_format_bonus_for_a_wrong_but_well_formed_answer():
    assert reward(WELL_FORMED % "Rome", "Paris", eos_token=EOS) == 0.1
    assert reward(WELL_FORMED % "Rome", [], eos_token=EOS) == 0.1  # no gold: the reference's F1 is 0


def test_a_right_answer_earns_nothing_when_the_format_is_off():
    assert reward((WELL_FORMED % "Paris").replace("<think> t </think>", ""), "Paris", eos_token=EOS) == 0.0


def test_a_right_answer_earns_nothing_without_the_tokenizers_own_eos():
    assert reward((WELL_FORMED % "Paris").removesuffix(EOS), "Paris", eos_token=EOS) == 0.0  # cut by the budget
    other = (WELL_FORMED % "Paris").replace(EOS, "<|endoftext|>")
    assert reward(other, "Paris", eos_token=EOS) == 0.0
    assert reward(other, "Paris", eos_token="<|endoftext|>") == 1.0


def test_an_unclosed_box_earns_nothing():
    assert reward(r"<think> t </think> <answer> \boxed{Paris \boxed{x}} </answer>" + EOS, "x", eos_token=EOS) == 1.0
    assert reward(r"<think> t </think> <answer> \boxed{x} \boxed{Paris </answer>}" + EOS, "x", eos_token=EOS) == 0.0
