"""``research-index import``: a real FAISS flat index of the bundled corpus becomes our index, same results."""

from __future__ import annotations

import gzip
import logging
import subprocess
import sys
from itertools import islice
from pathlib import Path

import faiss
import numpy as np
import pytest

from research.questions import demo_questions
from research.retrieval import Embedder, PassageIndex, build_index, read_corpus
from research.retrieval.demo_corpus import CORPUS
from research.retrieval.faiss_flat import FlatVectors, import_flat, open_flat

PASSAGES = 300
"""The first 300 of the bundled corpus's 10,378 real Wikipedia paragraphs: embedding all of them
with MiniLM takes minutes on two cores, and the import is what is tested."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Those passages as a wiki-18 .jsonl.gz (read gzipped, as the published corpora come)."""
    path = tmp_path_factory.mktemp("corpus") / "wiki.jsonl.gz"
    with gzip.open(CORPUS, "rt") as source, gzip.open(path, "wt") as out:
        out.writelines(islice(source, PASSAGES))
    return path


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory, corpus: Path, embedder: Embedder) -> PassageIndex:
    """The passages embedded by a plain build."""
    return build_index(tmp_path_factory.mktemp("direct") / "index", read_corpus(corpus), embedder=embedder)


def vectors_of(index: PassageIndex) -> np.ndarray:
    return np.stack(index.table.to_arrow().column("vector").to_numpy(zero_copy_only=False))


def write_flat(vectors: np.ndarray, path: Path, cls=faiss.IndexFlatIP) -> Path:
    flat = cls(vectors.shape[1])
    flat.add(vectors)
    faiss.write_index(flat, str(path))
    return path


@pytest.fixture(scope="module")
def flat_file(direct: PassageIndex, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FAISS IndexFlatIP of the same MiniLM vectors, written by FAISS itself (as Search-R1's e5_Flat.index is)."""
    return write_flat(vectors_of(direct), tmp_path_factory.mktemp("faiss") / "minilm_Flat.index")


def test_an_imported_faiss_index_answers_as_the_direct_build(direct, flat_file, corpus, embedder, tmp_path):
    imported = import_flat(tmp_path / "imported", flat_file, corpus, embedder=embedder, batch_size=128)
    assert len(imported) == len(direct) == faiss.read_index(str(flat_file)).ntotal
    questions = [q["question"] for q in demo_questions()[::45]]  # 20 real multi-hop questions
    for mine, theirs in zip(imported.search(questions, k=10), direct.search(questions, k=10), strict=True):
        assert [p.id for p in mine] == [p.id for p in theirs]
        assert [p.score for p in mine] == pytest.approx([p.score for p in theirs], abs=1e-6)
    assert imported.embedder.spec.name == direct.embedder.spec.name  # recorded: queries use the same model


def test_the_header_is_read_without_faiss_and_bad_files_are_refused(flat_file, tmp_path):
    flat = open_flat(flat_file)
    assert (flat.dim, flat.metric) == (384, "inner_product")
    index = faiss.read_index(str(flat_file))
    assert np.array_equal(flat.read(5, 9), index.reconstruct_n(5, 4))
    hnsw = tmp_path / "hnsw.index"
    faiss.write_index(faiss.IndexHNSWFlat(8, 4), str(hnsw))
    with pytest.raises(ValueError, match="not a FAISS flat index"):
        open_flat(hnsw)
    cut = tmp_path / "cut.index"
    cut.write_bytes(flat_file.read_bytes()[:10_000])
    with pytest.raises(ValueError, match="cut short"):
        open_flat(cut)
    with pytest.raises(FileNotFoundError):
        open_flat(tmp_path / "nowhere.index")


def test_a_corpus_that_is_not_the_index_s_is_refused_before_any_work(flat_file, embedder, tmp_path):
    shorter = tmp_path / "shorter.jsonl"
    shorter.write_text('{"id": "1", "contents": "\\"A\\"\\nB"}\n')
    with pytest.raises(ValueError, match=f"holds 1 passages and .* {PASSAGES} vectors"):
        import_flat(tmp_path / "index", flat_file, shorter, embedder=embedder)
    assert not (tmp_path / "index").exists()


def test_a_killed_import_resumes_with_every_row_once(direct, flat_file, corpus, embedder, tmp_path, monkeypatch):
    read, calls = FlatVectors.read, []

    def dies_on_the_third_chunk(self, start, stop):
        calls.append(start)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process killed mid-import
        return read(self, start, stop)

    monkeypatch.setattr(FlatVectors, "read", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        import_flat(tmp_path / "index", flat_file, corpus, embedder=embedder, batch_size=PASSAGES // 4)
    monkeypatch.setattr(FlatVectors, "read", read)
    resumed = import_flat(tmp_path / "index", flat_file, corpus, embedder=embedder, batch_size=PASSAGES // 4)
    ids = resumed.table.to_arrow().column("id").to_pylist()
    assert ids == [p.id for p in read_corpus(corpus)]  # the corpus's rows, in order, none twice
    assert np.array_equal(vectors_of(resumed), vectors_of(direct))


def test_vectors_that_are_not_unit_length_are_reported(direct, corpus, embedder, tmp_path, caplog):
    vectors = vectors_of(direct)
    vectors[:100] *= 2.0
    flat = write_flat(vectors, tmp_path / "scaled.index")
    with caplog.at_level(logging.WARNING, logger="research.retrieval"):
        import_flat(tmp_path / "index", flat, corpus, embedder=embedder)
    assert f"100 of the {PASSAGES} vectors imported now are not unit-length" in caplog.text


def test_research_index_import_on_the_command_line_to_s3(flat_file, corpus, s3, monkeypatch):
    """Straight to an S3 server (LanceDB's ``s3://``, the AWS environment); the direct build's test is on disk."""
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    index = "s3://research/imported"
    cmd = [sys.executable, "-m", "research.retrieval.cli", "import", "--faiss", str(flat_file), "--corpus", str(corpus),
           "--index", str(index), "--embedder", "sentence-transformers/all-MiniLM-L6-v2"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{index}: {PASSAGES} passages, vectors of sentence-transformers/all-MiniLM-L6-v2" in done.stdout
    assert f"all {PASSAGES} vectors imported now are unit-length" in done.stdout
    again = subprocess.run([*cmd[:-1], "intfloat/e5-base-v2"], capture_output=True, text=True)
    assert again.returncode == 2 and "was built with sentence-transformers/all-MiniLM-L6-v2" in again.stderr
