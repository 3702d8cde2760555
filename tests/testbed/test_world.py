"""The toy world: deterministic, fictional, answerable only from its passages."""

from __future__ import annotations

import json

from research.protocol import extract_answer
from research.testbed.world import counterfactual, main, make_world


def test_the_same_seed_gives_the_same_world_and_another_seed_another():
    assert make_world(3, chains=50) == make_world(3, chains=50)
    assert make_world(3, chains=50) != make_world(4, chains=50)


def test_passages_are_wiki18_shaped_and_unique():
    passages = make_world(0, chains=200).passages()
    assert len({p["id"] for p in passages}) == len(passages)
    title, _, text = passages[0]["contents"].partition("\n")
    assert title.startswith('"') and title.endswith('"') and text


def test_held_out_entities_never_appear_in_training_passages():
    world = make_world(0, chains=200)
    train_text = " ".join(p["contents"] for p in world.passages("train"))
    for chain in world.test:
        for name in (chain.product, chain.company, chain.founder):
            assert name not in train_text


def test_every_answer_is_written_in_its_gold_passages():
    world = make_world(0, chains=100)
    contents = {p["id"]: p["contents"] for p in world.passages()}
    for q in world.questions("test") + world.questions("train"):
        gold = " ".join(contents[i] for i in q.gold_ids)
        assert q.answer in gold, q
        assert len(q.turns) == len(q.queries) + 1
        assert extract_answer("".join(q.turns)) == q.answer


def test_each_query_and_answer_of_a_bridge_or_one_hop_trace_is_the_entity_named_last():
    """What the toy model's pointer head relies on (:func:`research.testbed.circuit.wire_pointer_head`)."""
    world = make_world(0, chains=100)
    contents = {p["id"]: p["contents"] for p in world.passages()}
    names = world.names()

    def named_last(text: str) -> str:
        return max(names, key=lambda name: (text.rfind(" " + name), len(name)))

    for q in world.questions("test"):
        if q.type == "comparison":
            continue
        text = q.question
        for turn, gold, query in zip(q.turns, q.gold_ids, q.queries, strict=False):
            text += turn.removesuffix(f" {query} </search>")
            assert named_last(text) == query, (q.question, text)
            text += f" {query} </search> {contents[gold]}"
        text += q.turns[-1].split("\\boxed{")[0]
        assert named_last(text) == q.answer, (q.question, text)


def test_question_types_cover_one_hop_bridges_and_comparisons():
    types = {q.type for q in make_world(0, chains=20).questions("test")}
    assert types == {"1hop", "2hop", "comparison"}


def test_the_counterfactual_world_keeps_names_but_changes_answers():
    world = make_world(0, chains=200)
    twisted = counterfactual(world)
    assert [c.product for c in twisted.test] == [c.product for c in world.test]
    assert twisted.train == world.train
    real = {q.id: q.answer for q in world.questions("test") if q.type == "2hop"}
    other = {q.id: q.answer for q in twisted.questions("test") if q.type == "2hop"}
    changed = sum(real[i] != other[i] for i in real)
    assert changed / len(real) > 0.8


def test_the_cli_writes_passages_and_questions(tmp_path, capsys):
    main(["--out", str(tmp_path), "--chains", "20"])
    rows = [json.loads(line) for line in (tmp_path / "passages.jsonl").read_text().splitlines()]
    assert {"id", "contents"} <= rows[0].keys()
    assert "test_questions.jsonl" in capsys.readouterr().out
