"""Dataset loaders: every published shape, sampling, clear errors."""

from __future__ import annotations

import json

import pytest

from research.evaluation.cli import datasets
from research.questions import bundled, load_examples

SHAPES = {
    "flashrag": {"id": "test_1", "question": "Q?", "golden_answers": ["A", "B"]},
    "hotpotqa": {"_id": "5a8b", "question": "Q?", "answer": "A", "type": "bridge", "level": "hard"},
    "2wiki": {"_id": "b08", "type": "comparison", "question": "Q?", "answer": "A", "evidences": []},
    "musique": {"id": "2hop__1_2", "question": "Q?", "answer": "A", "answer_aliases": ["B"], "answerable": True},
    "bamboogle": {"idx": 7, "question": "Q?", "answer": "A", "gen_text_store": ""},
}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_published_shape_loads_from_jsonl_and_json(tmp_path, shape):
    row = SHAPES[shape]
    (tmp_path / "a.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "b.json").write_text(json.dumps([row]))
    for name in ("a.jsonl", "b.json"):
        (ex,) = load_examples(tmp_path / name)
        assert ex.question == "Q?" and ex.answers[0] == "A"
        assert ex.id == str(row.get("id", row.get("_id", row.get("idx"))))
    if shape in ("flashrag", "musique"):
        assert ex.answers == ("A", "B")


def test_bundled_samples_and_seeded_limits():
    sizes = {name: len(bundled(name, limit=None, seed=0)) for name in ("hotpotqa", "2wikimultihopqa", "musique")}
    assert sizes == {"hotpotqa": 500, "2wikimultihopqa": 164, "musique": 200}
    bamboogle = bundled("bamboogle", limit=None, seed=0)
    assert len(bamboogle) == 125 and bamboogle[0].answers == ("james madison",)
    a, b = bundled("hotpotqa", limit=20, seed=1), bundled("hotpotqa", limit=20, seed=1)
    assert a == b and len(a) == 20 and a != bundled("hotpotqa", limit=20, seed=2)


def test_bad_datasets_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not one of"):
        datasets(["nope"], limit=None, seed=0)
    with pytest.raises(FileNotFoundError):
        datasets(["x=missing.jsonl"], limit=None, seed=0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q"}\n')
    with pytest.raises(ValueError, match="no 'answer'"):
        load_examples(bad)
    bad.write_text('{"question": "Q", "answer": "A"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2: not JSON"):
        load_examples(bad)
    bad.write_text('{"id": 1, "question": "Q", "answer": "A"}\n{"id": 1, "question": "R", "answer": "B"}\n')
    with pytest.raises(ValueError, match="not unique"):
        load_examples(bad)


GOOD_LINE = '{"id": "a", "question": "Q", "answer": "A"}\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the dataset holds no questions"),
        (GOOD_LINE + "null\n", "line 2: not a JSON object but NoneType null"),
        (GOOD_LINE + "7\n", "line 2: not a JSON object but int 7"),
        (GOOD_LINE + '{"id": "b", "question": 42, "answer": "A"}\n', "line 2: a record needs a non-empty 'question'"),
        ('{"id": "b", "question": "  ", "answer": "A"}\n', "line 1: a record needs a non-empty 'question'"),
        ('[{"question": "Q", "answer": "A"}, {"question": "R"}]', "item 2: the record has no 'answer'"),
    ],
)
def test_every_bad_record_names_its_file_and_line(tmp_path, text, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(text)
    with pytest.raises(ValueError, match=f"bad.jsonl: {message}".replace("(", r"\(").replace(")", r"\)")):
        load_examples(bad)


def test_golden_answers_as_a_string_is_one_answer_and_a_limit_is_at_least_one(tmp_path):
    path = tmp_path / "flashrag.jsonl"
    path.write_text('{"id": "x", "question": "Q", "golden_answers": "Paris"}\n')
    [only] = load_examples(path)
    assert only.answers == ("Paris",)  # it used to be split into characters: ('P', 'a', 'r', 'i', 's')
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        load_examples(path, limit=0)
