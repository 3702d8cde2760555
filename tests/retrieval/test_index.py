"""The LanceDB passage index on disk with the real MiniLM embedder."""

from __future__ import annotations

import asyncio
import json

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from lancedb.index import IvfSq

from research.retrieval import MAX_K, BatchingRetriever, Embedder, IndexMismatchError, Passage, connect, read_jsonl
from research.retrieval.ann import ANN_MIN_ROWS, ann_nprobes, nearest
from research.retrieval.build import _ensure_indices
from research.retrieval.pipeline import embed_chunks
from tests.support.counting import CountingIndex


def test_search_finds_the_passage_that_answers_the_query(script_index):
    [hits] = script_index.search(["What is the capital of Freedonia?"], k=3)
    assert hits[0].id in {"fr-1", "fr-2"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert 0 < hits[0].score <= 1.0


def test_one_call_answers_many_queries_in_order(script_index):
    results = script_index.search(["copper mines winter festival", "Freedonia capital"], k=2)
    assert results[0][0].id == "sy-2"
    assert results[1][0].id in {"fr-1", "fr-2"}
    assert script_index.search([], k=2) == []


def test_a_large_batch_keeps_each_query_its_own_results(script_index):
    queries = ["copper mines winter festival", "Freedonia capital", "river traders"] * 20 + ["river traders"]
    one_by_one = {q: [h.id for h in script_index.search([q], k=2)[0]] for q in set(queries)}
    assert [[h.id for h in hits] for hits in script_index.search(queries, k=2)] == [one_by_one[q] for q in queries]


def test_reopening_uses_the_embedder_recorded_in_the_table(script_index):
    reopened = connect(script_index.uri)
    assert reopened.embedder.spec.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(reopened) == 8


def test_a_different_embedder_is_refused(tmp_path, embedder):
    from research.retrieval import build_index

    build_index(tmp_path / "idx", [Passage("1", '"A"\nalpha')], embedder=embedder)
    with pytest.raises(IndexMismatchError, match="all-MiniLM-L6-v2"):
        connect(tmp_path / "idx", embedder="intfloat/e5-base-v2")


def _chunks(n: int, size: int) -> list[tuple[int, list[str]]]:
    texts = [f"passage number {i} about river {i % 7}" + " and its banks" * (i % 13) for i in range(n)]
    return [(start, texts[start : start + size]) for start in range(0, n, size)]


@pytest.mark.parametrize("workers", [0, 2])
def test_the_build_pipeline_gives_the_vectors_of_encode_chunk_by_chunk_in_order(embedder, workers):
    chunks = _chunks(150, 40)  # batches of 16 in each chunk are cut longest first, then put back
    pipelined = Embedder(embedder.spec.name, device="cpu", batch_size=16, workers=workers)
    got = list(embed_chunks(pipelined, chunks))
    assert [key for key, _ in got] == [key for key, _ in chunks]
    for (_, texts), (_, vectors) in zip(chunks, got, strict=True):
        np.testing.assert_allclose(vectors, embedder.encode_passages(texts), atol=1e-5)


def test_several_devices_encode_in_one_process_each_and_come_back_in_order(embedder):
    chunks = _chunks(120, 20)
    pooled = Embedder(embedder.spec.name, device="cpu,cpu", workers=1)
    got = list(embed_chunks(pooled, chunks))
    assert [key for key, _ in got] == [key for key, _ in chunks]
    want = embedder.encode_passages([t for _, texts in chunks for t in texts])
    np.testing.assert_allclose(np.concatenate([v for _, v in got]), want, atol=1e-5)


def test_a_bad_passage_stops_the_pipeline_after_the_chunks_before_it(embedder):
    def chunks():
        yield from _chunks(60, 20)
        raise ValueError("corpus.jsonl:61: not JSON")

    got = []
    with pytest.raises(ValueError, match="61: not JSON"):
        for key, _ in embed_chunks(Embedder(embedder.spec.name, device="cpu", workers=2), chunks()):
            got.append(key)
    assert got == [0, 20, 40]  # every chunk read before the error, none after


def test_a_missing_index_says_how_to_build_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="research-index"):
        connect(tmp_path / "nowhere")


@pytest.mark.parametrize("k", [0, MAX_K + 1])
def test_k_outside_its_range_is_refused(script_index, k):
    with pytest.raises(ValueError, match=f"k must be between 1 and {MAX_K}"):
        script_index.search(["x"], k=k)


def test_nprobes_below_one_is_refused(script_index):
    with pytest.raises(ValueError, match="nprobes must be at least 1"):
        connect(script_index.uri, nprobes=0)


@pytest.mark.parametrize("ivf_device", [None, "cpu"], ids=["lancedb", "torch"])
def test_a_large_table_gets_an_ivf_flat_index_that_finds_the_true_nearest_rows(tmp_path, ivf_device):
    """The indices build_index makes from ANN_MIN_ROWS rows on, replacing an older kind, searched as
    PassageIndex searches; the IVF k-means and row assignment by LanceDB or by torch (as on a GPU)."""
    n, dim, rng = ANN_MIN_ROWS, 32, np.random.default_rng(0)
    centers = rng.standard_normal((500, dim), dtype=np.float32)
    data = centers[rng.integers(0, len(centers), n + 100)] + 0.5 * rng.standard_normal((n + 100, dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    rows, queries = data[:n], data[n:]
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), dim)
    table = pa.table({"id": np.arange(n), "contents": [f"passage {i}" for i in range(n)], "vector": vectors})
    tbl = lancedb.connect(tmp_path).create_table("v", table)
    tbl.create_index("vector", config=IvfSq(distance_type="dot", num_partitions=1))  # another kind
    _ensure_indices(tbl, ivf_device)
    assert sorted(i.index_type for i in tbl.list_indices()) == ["BTree", "FTS", "IvfFlat"]

    found = [[r["id"] for r in hits] for hits in nearest(tbl, queries, 10, ["id"], nprobes=ann_nprobes(n))]
    truth = np.argsort(-(queries @ rows.T), axis=1)[:, :10]
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95


def test_e5_reads_its_query_and_passage_prefixes():
    spec = Embedder("intfloat/e5-base-v2").spec
    assert (spec.query_prefix, spec.passage_prefix) == ("query: ", "passage: ")


def test_wiki18_jsonl_is_read_line_by_line_with_clear_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": 3, "contents": '"T"\nbody'}) + "\n\n" + '{"id": "4"}\n')
    rows = read_jsonl(path)
    assert next(rows) == Passage("3", '"T"\nbody')
    with pytest.raises(ValueError, match=r"c.jsonl:3: .contents. must be a string, got null"):
        next(rows)


async def test_concurrent_searches_are_merged_into_one_embedding_batch(script_index):
    index = CountingIndex(script_index)
    retriever = BatchingRetriever(index)
    queries = ["Freedonia capital", "copper mines", "signal stone monument", "maps archive"] * 4
    results = await asyncio.gather(*(retriever.search([q], k=1) for q in queries))
    assert index.batches == [16]
    assert [r.passages[0][0].id for r in results[:4]] == [r.passages[0][0].id for r in results[4:8]]
    assert results[0].passages[0][0].id in {"fr-1", "fr-2"}
    await retriever.close()


async def test_a_failing_index_fails_only_its_batch(script_index):
    retriever = BatchingRetriever(script_index)
    with pytest.raises(ValueError, match="k must be between 1"):
        await retriever.search(["x"], k=0)
    assert len((await retriever.search(["Freedonia"], k=2)).passages[0]) == 2
    await retriever.close()


async def test_an_opened_retriever_has_its_embedder_loaded_before_the_first_search(script_index):
    """Servers open their retriever before they listen: the model load is not a search's (it timed one out)."""
    from research.retrieval.cli import RetrieverArgs

    retriever = RetrieverArgs(index=script_index.uri).open_retriever()
    try:
        assert retriever.index is not script_index and "model" in vars(retriever.index.embedder)
    finally:
        await retriever.close()
