"""The bundled demo corpus: real Wikipedia paragraphs from multi-hop QA dev samples.

``retrieval/data/demo_corpus.jsonl.gz`` holds the context paragraphs of the
HotpotQA (500), 2WikiMultiHopQA (200) and MuSiQue (200) dev samples and the
1,000-passage wiki-18 sample, deduplicated by title and text, in wiki-18 layout.
The questions, with the ids of their gold supporting paragraphs, go to
``questions/data/demo_questions.jsonl.gz`` (read by :mod:`research.questions`).
Regenerate both from the samples (provenance in their ``SOURCES.md``), in a checkout::

    python -m research.retrieval.demo_corpus --data ../shared/data
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from research.wire import Passage

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "demo_corpus.jsonl.gz"
QUESTIONS_OUT = Path(__file__).resolve().parents[1] / "questions" / "data"
"""Where the questions file goes in a checkout (``research.questions`` ships it)."""


def passage(title: str, text: str) -> Passage:
    """A passage with an id derived from its title and text (stable across rebuilds)."""
    contents = f'"{title}"\n{text.strip()}'
    return Passage(hashlib.sha1(contents.encode()).hexdigest()[:16], contents)


def _hotpotqa(path: Path) -> Iterator[tuple[dict, list[Passage], set[str]]]:
    for line in path.open(encoding="utf-8"):
        row = json.loads(line)
        ctx = row["context"]
        paragraphs = [passage(t, "".join(s)) for t, s in zip(ctx["title"], ctx["sentences"], strict=True)]
        gold = set(row["supporting_facts"]["title"])
        yield row, paragraphs, {p.id for p in paragraphs if p.title in gold}


def _twowiki(path: Path) -> Iterator[tuple[dict, list[Passage], set[str]]]:
    for line in path.open(encoding="utf-8"):
        row = json.loads(line)
        if "context" not in row:  # a few records of this sample come without their paragraphs
            continue
        paragraphs = [passage(t, " ".join(s)) for t, s in row["context"]]
        gold = {t for t, _ in row["supporting_facts"]}
        yield {**row, "id": row["_id"]}, paragraphs, {p.id for p in paragraphs if p.title in gold}


def _musique(path: Path) -> Iterator[tuple[dict, list[Passage], set[str]]]:
    for line in path.open(encoding="utf-8"):
        row = json.loads(line)
        paragraphs = [passage(p["title"], p["paragraph_text"]) for p in row["paragraphs"]]
        gold = {p.id for p, src in zip(paragraphs, row["paragraphs"], strict=True) if src["is_supporting"]}
        yield {**row, "answer": [row["answer"], *row.get("answer_aliases", [])]}, paragraphs, gold


SAMPLES = {
    "hotpotqa": ("hotpotqa/hotpotqa_dev_distractor_sample500.jsonl", _hotpotqa),
    "2wikimultihopqa": ("2wikimultihopqa/2wikimultihopqa_dev_sample200_migres.jsonl", _twowiki),
    "musique": ("musique/musique_ans_dev_sample200.jsonl", _musique),
}
WIKI18 = "corpus/flashrag_wiki18_sample1000.jsonl"


def build(data: Path, out: Path = DATA, questions_out: Path = QUESTIONS_OUT) -> tuple[int, int]:
    """Write the corpus and the questions from the samples under ``data``; (passages, questions)."""
    corpus: dict[str, Passage] = {}
    questions = []
    for name, (rel, read) in SAMPLES.items():
        for row, paragraphs, gold in read(data / rel):
            for p in paragraphs:
                corpus.setdefault(p.id, p)
            answer = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
            questions.append(
                {"dataset": name, "id": row["id"], "question": row["question"], "answer": answer, "gold": sorted(gold)}
            )
    for line in (data / WIKI18).open(encoding="utf-8"):
        contents = json.loads(line)["contents"]
        title, _, text = contents.partition("\n")
        p = passage(title.strip('"'), text)
        corpus.setdefault(p.id, p)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(out / CORPUS.name, "wt", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"id": p.id, "contents": p.contents}, ensure_ascii=False) + "\n" for p in corpus.values()
        )
    questions_out.mkdir(parents=True, exist_ok=True)
    with gzip.open(questions_out / "demo_questions.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(q, ensure_ascii=False) + "\n" for q in questions)
    return len(corpus), len(questions)


def read_passages() -> Iterator[Passage]:
    """The bundled corpus, streamed."""
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            yield Passage(row["id"], row["contents"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder with the dev samples")
    parser.add_argument("--out", type=Path, default=DATA, help="folder for the corpus")
    parser.add_argument("--questions-out", type=Path, default=QUESTIONS_OUT, help="folder for the questions")
    args = parser.parse_args(argv)
    passages, questions = build(args.data, args.out, args.questions_out)
    print(f"{args.out}: {passages} passages; {args.questions_out}: {questions} questions")


if __name__ == "__main__":
    main()
