"""A resumed build checks the whole committed part by its digest; repeated ids are found in bounded memory."""

from __future__ import annotations

import logging

import lancedb
import numpy as np
import pytest

from research.retrieval import Passage, build_index
from research.retrieval.ledger import LOG_TABLE, IdHashes, id_hashes

PASSAGES = [Passage(str(i), f'"Title {i}"\ntext of passage {i}') for i in range(10)]


def stored_ids(uri) -> list[str]:
    return lancedb.connect(str(uri)).open_table("passages").to_arrow().column("id").to_pylist()


def first(n: int, uri, embedder) -> None:
    """What a build killed after ``n`` passages leaves (commits of 3)."""
    build_index(uri, PASSAGES[:n], embedder=embedder, batch_size=3)


def test_a_corpus_edited_in_the_committed_part_is_refused_wherever_the_edit_is(tmp_path, embedder):
    first(6, tmp_path / "i", embedder)
    for at in (0, 1, 4):  # the last row (5) is the one the old check compared; these it never saw
        edited = [*PASSAGES]
        edited[at] = Passage(str(at), '"Title"\nedited')
        lower = at // 3 * 3
        with pytest.raises(ValueError, match=f"not the first 6 passages of this corpus \\(passages {lower + 1}-"):
            build_index(tmp_path / "i", edited, embedder=embedder, batch_size=3)
    assert stored_ids(tmp_path / "i") == [str(i) for i in range(6)]  # nothing changed
    build_index(tmp_path / "i", PASSAGES, embedder=embedder, batch_size=3)
    assert stored_ids(tmp_path / "i") == [p.id for p in PASSAGES]


def test_rows_committed_after_the_last_record_are_compared_one_by_one(tmp_path, embedder):
    """A kill between a commit and its record: the log ends before the table does."""
    first(6, tmp_path / "i", embedder)
    log = lancedb.connect(str(tmp_path / "i")).open_table(LOG_TABLE)
    log.delete("rows = 6")
    edited = [*PASSAGES]
    edited[4] = Passage("4", '"Title"\nedited')
    with pytest.raises(ValueError, match="passages 4-6 differ"):
        build_index(tmp_path / "i", edited, embedder=embedder, batch_size=3)
    build_index(tmp_path / "i", PASSAGES, embedder=embedder, batch_size=3)
    assert stored_ids(tmp_path / "i") == [p.id for p in PASSAGES]
    log = lancedb.connect(str(tmp_path / "i")).open_table(LOG_TABLE)
    assert sorted(log.to_arrow().column("rows").to_pylist()) == [3, 6, 9, 10]  # the missing record written


def test_an_index_built_before_the_log_resumes_on_its_last_row_and_says_so(tmp_path, embedder, caplog):
    first(6, tmp_path / "i", embedder)
    lancedb.connect(str(tmp_path / "i")).drop_table(LOG_TABLE)
    with caplog.at_level(logging.WARNING, logger="research.retrieval"):
        build_index(tmp_path / "i", PASSAGES, embedder=embedder, batch_size=3)
    assert "built before content digests: only its last row is compared" in caplog.text
    assert stored_ids(tmp_path / "i") == [p.id for p in PASSAGES]


def test_a_repeated_id_is_found_in_any_earlier_batch_committed_or_not(tmp_path, embedder):
    for at in (1, 5, 9):  # in the same batch as its first, in the next, several batches later
        repeated = [*PASSAGES, Passage(str(at), '"Again"\nrepeated')] if at == 9 else [*PASSAGES]
        if at != 9:
            repeated.insert(at + 1, Passage(str(at), '"Again"\nrepeated'))
        with pytest.raises(ValueError, match=f"the passage id '{at}' appears twice"):
            build_index(tmp_path / f"i{at}", repeated, embedder=embedder, batch_size=3)


def test_hashes_that_collide_are_not_taken_for_repeats(tmp_path, embedder, monkeypatch):
    """Every id hashed alike: each match is a candidate the ids themselves settle (earlier batches in the table)."""
    monkeypatch.setattr("research.retrieval.build.id_hashes", lambda ids: np.zeros(len(list(ids)), np.uint64))
    build_index(tmp_path / "i", PASSAGES, embedder=embedder, batch_size=3)
    assert stored_ids(tmp_path / "i") == [p.id for p in PASSAGES]
    with pytest.raises(ValueError, match="the passage id '2' appears twice"):
        build_index(tmp_path / "j", [*PASSAGES, PASSAGES[2]], embedder=embedder, batch_size=3)


def test_id_hashes_find_repeats_within_and_across_batches():
    hashes = IdHashes()
    ids = [f"wiki-{i}" for i in range(50_000)]
    for start in range(0, len(ids), 4096):
        assert len(hashes.add(id_hashes(ids[start : start + 4096]))) == 0
    assert hashes.nbytes == 8 * len(ids)
    assert list(hashes.add(id_hashes(["new", "wiki-7", "new", "wiki-49999", "other"]))) == [1, 2, 3]
