"""Issue #3's acceptance measurement, with loose bounds: the toy model answers held-out questions by searching.

``python -m research.testbed.acceptance`` prints the full measurement (200
questions); this runs 30 through the real search loop, in-process vLLM and the
real LanceDB index.
"""

from __future__ import annotations

from research.testbed.acceptance import measure


async def test_held_out_answers_come_from_retrieval_not_memory(toy_vllm_engine, toy_recipe):
    scores = {s.name: s for s in await measure(toy_vllm_engine, 30, toy_recipe)}
    research, counterfactual, naive = scores["research"], scores["counterfactual"], scores["naive"]
    # measured on 200: 0.96 / 0.96 / 0.0, well-formed 0.98 (README); issue #3 asks >= 0.8 / >= 0.8 / <= 0.1
    assert research.exact_match >= 0.7 and research.well_formed >= 0.8
    assert counterfactual.exact_match >= 0.7  # other facts in the index, other answers
    assert naive.exact_match <= 0.1  # nothing retrieved: the model cannot know
    assert 1.8 <= research.searches <= 2.5  # two hops, two searches
