"""research-index end to end: a resumable build killed midway, search modes, the HTTP APIs under load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import lancedb
import pytest

from research.retrieval import BatchingRetriever, Passage, build_index
from research.retrieval.cli import Build
from research.retrieval.cli import main as index_main
from research.retrieval.service import create_app
from research.testbed.processes import free_port
from research.testbed.world import make_world
from tests.support.cli import run_main
from tests.support.counting import CountingIndex

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[str, list[str]]:
    passages = make_world(7, chains=400).passages()
    path = tmp_path_factory.mktemp("corpus") / "toy.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in passages))
    return str(path), [p["id"] for p in passages]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "research.retrieval.cli", *args]


def _rows(uri) -> int:
    try:
        return lancedb.connect(str(uri)).open_table("passages").count_rows()
    except (FileNotFoundError, ValueError):
        return 0


@pytest.mark.parametrize("store", ["disk", "s3"])
def test_a_build_killed_midway_resumes_without_duplicates_or_gaps(store, corpus, tmp_path, request, monkeypatch):
    """On disk, and on an S3 server through LanceDB's own ``s3://`` support (the AWS tools' environment)."""
    path, ids = corpus
    uri: str | Path = tmp_path / "index"
    if store == "s3":
        for name, value in request.getfixturevalue("s3").items():
            monkeypatch.setenv(name, value)  # for this process and the build's
        uri = f"s3://research/{tmp_path.name}"
    build = _cli("build", "--corpus", path, "--index", str(uri), "--embedder", MINILM, "--device", "cpu")
    build += ["--commit-every", "128", "--batch-size", "64", "--workers", "2"]  # the tokenisers are killed too
    proc = subprocess.Popen(build, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while _rows(uri) < 256 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _rows(uri)
    assert 0 < killed_at < len(ids), "the build should have been killed midway"

    done = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "indexing (FTS on 'contents' and BTree on 'id'):" in done.stderr  # the index stage shows its progress line
    table = lancedb.connect(str(uri)).open_table("passages")
    stored = table.to_arrow().column("id").to_pylist()
    assert len(stored) == len(ids) and Counter(stored) == Counter(ids)
    assert stored == ids  # corpus order, the resumed part right after the committed one
    index_types = {i.index_type for i in table.list_indices()}
    assert "FTS" in index_types


def test_resuming_over_another_corpus_is_refused(corpus, tmp_path, embedder):
    path, _ = corpus
    build_index(tmp_path / "i", [Passage("other", '"X"\nx')], embedder=embedder)
    with pytest.raises(ValueError, match="not the first 1 passages of this corpus"):
        from research.retrieval import read_corpus

        build_index(tmp_path / "i", read_corpus(path), embedder=embedder)


def test_a_positional_corpus_with_other_text_is_refused_on_resume(tmp_path, embedder):
    """wiki-18's ids are positions: another corpus matches on ids, so the text is compared too."""
    build_index(tmp_path / "i", [Passage("1", '"A"\nalpha'), Passage("2", '"B"\nbeta')], embedder=embedder)
    with pytest.raises(ValueError, match="not the first 2 passages of this corpus"):
        build_index(tmp_path / "i", [Passage("1", '"A"\nalpha'), Passage("2", '"C"\ngamma')], embedder=embedder)


GOOD_PASSAGE = '{"id": "1", "contents": "\\"A\\"\\nalpha"}\n'
BAD_BUILDS = [
    pytest.param("", [], "the corpus holds no passages", id="empty-corpus"),
    pytest.param(
        GOOD_PASSAGE + '{"id": "2", "contents": null}\n',
        [],
        "c.jsonl:2: 'contents' must be a string, got null",
        id="contents-null",
    ),
    pytest.param('{"id": 2, "contents": 7}\n', [], "c.jsonl:1: 'contents' must be a string, got 7", id="contents-7"),
    pytest.param("null\n", [], "c.jsonl:1: not a wiki-18 passage (an object", id="null-line"),
    pytest.param(GOOD_PASSAGE * 2, [], "the passage id '1' appears twice in the corpus", id="duplicate-ids"),
    pytest.param(GOOD_PASSAGE, ["--commit-every", "0"], "--commit-every must be at least 1, got 0", id="commit-0"),
    pytest.param(GOOD_PASSAGE, ["--index", "FILE"], "is a file; give a folder", id="index-is-a-file"),
    pytest.param(
        GOOD_PASSAGE,
        ["--ivf-device", "gpu"],
        "--ivf-device must be lancedb, cpu, mps, cuda or cuda:N, got 'gpu'",
        id="ivf-device",
    ),
]


@pytest.mark.parametrize(("corpus_text", "extra", "message"), BAD_BUILDS)
def test_every_bad_build_input_is_a_one_line_error_that_changes_nothing(
    tmp_path, embedder, corpus_text, extra, message
):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(corpus_text)
    (tmp_path / "FILE").write_text("not an index")
    index = tmp_path / "index"
    build_index(index, [Passage("old", '"Old"\nkept')], embedder=embedder)  # a previous build, to be left intact
    extra = [str(tmp_path / "FILE") if a == "FILE" else a for a in extra]
    args = ["build", "--corpus", str(corpus), "--index", str(index), "--embedder", MINILM, "--device", "cpu"]
    args += ["--overwrite", *extra]
    done = run_main(index_main, args)
    assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1], done.stderr
    assert "Traceback" not in done.stderr
    assert lancedb.connect(str(index)).open_table("passages").to_arrow().column("id").to_pylist() == ["old"]
    corpus.write_text(GOOD_PASSAGE)  # the corrected command works
    fixed = args[: len(args) - len(extra)]
    assert run_main(index_main, fixed).returncode == 0
    assert lancedb.connect(str(index)).open_table("passages").to_arrow().column("id").to_pylist() == ["1"]


@pytest.mark.parametrize(
    ("ivf_device", "device", "torch_device"),
    [(None, "cuda:1,cuda:2", "cuda:1"), (None, "cpu", "cpu"), ("lancedb", "cuda", None), ("cuda:3", "cpu", "cuda:3")],
)
def test_the_ivf_index_is_built_with_torch_on_the_builds_first_gpu_else_the_cpu(
    ivf_device, device, torch_device, monkeypatch
):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # the rule as on a GPU machine
    build = Build(corpus="c.jsonl", index="i", device=device, ivf_device=ivf_device)
    assert build.ivf_torch_device(build.device) == torch_device


def test_an_ivf_device_that_is_not_here_is_refused_before_any_work(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(GOOD_PASSAGE)
    args = ["build", "--corpus", str(corpus), "--index", str(tmp_path / "i"), "--embedder", MINILM]
    done = run_main(index_main, [*args, "--device", "cpu", "--ivf-device", "cuda:1"])
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip().splitlines()[-1].endswith("--ivf-device cuda:1: no CUDA device here (use cpu or lancedb)")
    )
    assert not (tmp_path / "i").exists()  # refused before the index was looked at


def test_a_bad_build_input_ends_the_real_command_with_its_one_line(tmp_path):
    """The table above runs in-process; as a console script, the error is the last line and no traceback."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(GOOD_PASSAGE * 2)
    args = ["build", "--corpus", str(corpus), "--index", str(tmp_path / "index"), "--embedder", MINILM]
    done = subprocess.run(_cli(*args, "--device", "cpu"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    message = "research-index: error: the passage id '1' appears twice in the corpus: ids must be unique"
    assert done.stderr.strip().splitlines()[-1] == message


def test_a_rerun_without_embedder_resumes_with_the_indexs_own_and_another_is_refused_before_loading(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(GOOD_PASSAGE)
    build = ["build", "--corpus", str(corpus), "--index", str(tmp_path / "i"), "--device", "cpu"]
    first = run_main(index_main, [*build, "--embedder", MINILM])
    again = run_main(index_main, build)  # offline, E5 is not here
    other = run_main(index_main, [*build, "--embedder", "intfloat/e5-base-v2"])
    assert first.returncode == again.returncode == 0, again.stderr
    assert f"embedder {MINILM}" in again.stdout
    assert other.returncode == 2 and f"was built with {MINILM}, not intfloat/e5-base-v2" in other.stderr


def test_search_modes_find_the_named_entity(script_index):
    for mode in ("vector", "fts", "hybrid"):
        [hits] = script_index.search(["capital of Freedonia"], k=3, mode=mode)
        assert hits[0].id in {"fr-1", "fr-2"}, mode
        assert len(hits) == 3
    with pytest.raises(ValueError, match="unknown search mode"):
        script_index.search(["x"], mode="semantic")


def test_the_search_command_prints_ranked_passages(script_index):
    args = ["search", "capital of Freedonia", "--index", script_index.uri, "--search-top-k", "2", "--mode", "hybrid"]
    out = run_main(index_main, args)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "# capital of Freedonia" and lines[1].startswith(" 1. [") and "Freedonia" in lines[1]


def test_a_missing_index_is_a_one_line_error():
    out = run_main(index_main, ["search", "x", "--index", "/nonexistent/idx"])
    assert out.returncode == 2 and "research-index: error: no passage index" in out.stderr


@pytest.fixture
async def service(script_index):
    import uvicorn

    index = CountingIndex(script_index)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(BatchingRetriever(index), k=3), port=port, log_level="warning"))
    task = asyncio.create_task(uv.serve())
    while not uv.started:
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}", index
    uv.should_exit = True
    await task


async def test_research_and_search_r1_clients_payloads(service):
    url, _ = service
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        # ReSearch's evaluation client: POST /batch_search {"query": [...], "top_n": 5}
        docs = (await http.post("/batch_search", json={"query": ["capital of Freedonia", "copper"], "top_n": 5})).json()
        assert len(docs) == 2 and all(len(d) == 5 for d in docs)
        assert set(docs[0][0]) == {"id", "contents"} and docs[0][0]["contents"].startswith('"Freedonia"')
        asked = {"query": "Freedonia", "top_n": 2, "return_score": True}
        single, scores = (await http.post("/search", json=asked)).json()
        assert len(single) == len(scores) == 2 and scores[0] >= scores[1]
        # Search-R1's retriever client: POST /retrieve {"queries": [...], "topk": 3, "return_scores": true}
        asked = {"queries": ["capital of Freedonia"], "topk": 3, "return_scores": True}
        r1 = await http.post("/retrieve", json=asked)
        [hits] = r1.json()["result"]
        assert len(hits) == 3 and set(hits[0]) == {"document", "score"}
        assert hits[0]["document"]["contents"].split("\n")[0] == '"Freedonia"'
        default_k = (await http.post("/retrieve", json={"queries": ["x"]})).json()["result"][0]
        assert len(default_k) == 3
        ours = (await http.post("/v1/search", json={"queries": ["Freedonia"], "k": 2, "mode": "fts"})).json()
        assert ours["data"][0]["passages"][0]["title"] == "Freedonia"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/search", {"query": "x", "top_n": 0}, "top_n"),
        ("/batch_search", {"query": []}, "query"),
        ("/retrieve", {"queries": "x"}, "queries"),
        ("/v1/search", {"queries": ["x"], "k": 1000}, "k"),
        ("/v1/search", {"queries": ["x"], "mode": "magic"}, "mode"),
    ],
)
async def test_bad_retriever_requests_are_400s(service, path, body, param):
    url, _ = service
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        response = await http.post(path, json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


async def test_fifty_concurrent_requests_are_answered_correctly_in_shared_batches(service, script_index):
    url, index = service
    queries = ["capital of Freedonia", "copper mines", "signal stone monument", "maps archive", "harbor ore"]
    expected = {q: script_index.search([q], k=2)[0][0].id for q in queries}
    index.batches.clear()
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        replies = await asyncio.gather(
            *(http.post("/retrieve", json={"queries": [queries[i % 5]], "topk": 2}) for i in range(50))
        )
    for i, reply in enumerate(replies):
        assert reply.status_code == 200
        assert reply.json()["result"][0][0]["id"] == expected[queries[i % 5]]
    assert sum(index.batches) == 50 and len(index.batches) < 50
