"""Index-build embedding throughput: our pipeline against ``encode`` and against the encoder alone.

    python bench/embed_throughput.py                                   # both shapes, the best device here
    python bench/embed_throughput.py --shapes all-MiniLM-L6-v2 --passages 1024   # a quick CPU run
    python bench/embed_throughput.py --batch-size 1024 --workers 8     # an H100

Passages are the bundled demo corpus (real Wikipedia paragraphs, 88 words on average;
wiki-18's are 100 words plus a title). Speed depends on the shape, not the weights, and
E5-base-v2 cannot be downloaded here: both embedders are built with random weights in
their real shapes (E5-base-v2 is BERT-base: 12 layers, 768 hidden; MiniLM-L6: 6 layers,
384 hidden) and the real bert-base-uncased WordPiece vocabulary both use (``--vocab``,
default: the one the shipped MiniLM package holds), so tokens per passage and FLOPs are
theirs. For each shape, in one run on one device, passages in chunks of ``--chunk`` (one
LanceDB commit each):

- ``encode``: sentence-transformers' ``encode`` on each chunk (what the build did before);
- ``pipeline``: :func:`research.retrieval.pipeline.embed_chunks` (what ``research-index
  build`` runs: ``--workers`` tokenising processes ahead of the encoder);
- ``tokeniser alone``: the same tokenisation in this process, no model;
- ``encoder alone``: the model on batches tokenised beforehand (the limit).

Prints passages/s, each row against the encoder alone, and from the pipeline's E5 rate
the time to embed all of wiki-18 (21,015,324 passages) on this device.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path

WIKI18_PASSAGES = 21_015_324
WIKI18_WORDS = 100 + 3  # a 100-word chunk plus its title


SHAPES = {  # BERT shapes: layers, hidden, heads, max tokens (both use bert-base-uncased's vocabulary)
    "all-MiniLM-L6-v2": (6, 384, 12, 256),
    "e5-base-v2": (12, 768, 12, 512),
}


def shaped(name: str, vocab: str, out: Path) -> Path:
    """A random-weight sentence-transformers model (mean pooling) of ``name``'s shape and vocabulary."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    layers, hidden, heads, max_tokens = SHAPES[name]
    torch.manual_seed(0)
    AutoTokenizer.from_pretrained(vocab).save_pretrained(out / name / "bert")
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * hidden)  # fmt: skip
    BertModel(config).save_pretrained(out / name / "bert")
    bert = models.Transformer(str(out / name / "bert"), max_seq_length=max_tokens)
    SentenceTransformer(modules=[bert, models.Pooling(hidden, pooling_mode="mean")]).save(str(out / name / "st"))
    return out / name / "st"


def shaped_embedder(
    label: str, vocab: str | None, out: Path, device: str | None, batch_size: int, workers: int | None = None
):
    """research-index's :class:`Embedder` for the model ``label`` names (its prefixes), on a random-weight model of
    its shape built under ``out`` (``vocab``: bert-base-uncased's tokenizer; default the MiniLM package's)."""
    from research.retrieval.embedders import DEFAULT_EMBEDDER, REGISTRY, Embedder, model_path
    from research.testbed.embedder import EMBEDDER

    spec = REGISTRY[{"all-MiniLM-L6-v2": EMBEDDER, "e5-base-v2": DEFAULT_EMBEDDER}[label]]
    embedder = Embedder(spec.name, device=device, batch_size=batch_size, workers=workers)
    embedder.spec = replace(spec, name=str(shaped(label, vocab or model_path(EMBEDDER), out)))
    return embedder


def rates(embedder, texts: list[str], chunk: int) -> dict[str, float]:
    """Passages/s of each way to embed ``texts`` (chunks of ``chunk``) with ``embedder``."""
    import torch

    from research.retrieval.pipeline import embed_chunks, encode, tokenize

    chunks = [(i, texts[i : i + chunk]) for i in range(0, len(texts), chunk)]
    model, size = embedder.model, embedder.batch_size
    prefixed = [[embedder.spec.passage_prefix + t for t in c] for _, c in chunks]

    def timed(run) -> float:
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return len(texts) / (time.perf_counter() - start)

    tokenised: list = []
    out = {
        "encode": timed(lambda: [embedder.encode_passages(c) for _, c in chunks]),
        "pipeline": timed(lambda: list(embed_chunks(embedder, chunks))),
        "tokeniser alone": timed(lambda: tokenised.extend(tokenize(c, size, model) for c in prefixed)),
    }
    out["encoder alone"] = timed(lambda: [encode(model, batches) for batches in tokenised])
    return out


def main() -> None:
    import torch

    from research.retrieval.demo_corpus import read_passages

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--passages", type=int, default=10_000, help="passages per measurement (default 10,000)")
    p.add_argument("--batch-size", type=int, default=256, help="passages per forward pass (default 256)")
    p.add_argument("--chunk", type=int, default=8192, help="passages per commit (default 8192, the CLI's)")
    p.add_argument("--workers", type=int, help="tokenising processes (default: the build's for the device)")
    p.add_argument("--device", help="cpu, cuda, cuda:0,cuda:1 ... (default: the best here)")
    p.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES), help="models to measure")
    p.add_argument("--vocab", help="folder of the bert-base-uncased tokenizer (default: the MiniLM package's)")
    args = p.parse_args()
    passages = [q.contents for q in islice(read_passages(), args.passages)]
    words = sum(len(c.split()) for c in passages) / len(passages)
    rows = []
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as tmp:
        for label in args.shapes:
            embedder = shaped_embedder(label, args.vocab, Path(tmp), args.device, args.batch_size, args.workers)
            embedder.encode_passages(passages[: args.batch_size])  # warm-up: load, kernels
            dtype = str(next(embedder.model.parameters()).dtype).removeprefix("torch.")
            rows.append((label, dtype, embedder.workers, rates(embedder, passages, args.chunk)))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu, {os.cpu_count()} cores"
    print(f"\n{len(passages):,} passages ({words:.0f} words on average), batch {args.batch_size}, "
          f"chunk {args.chunk}, {device} ({name})")  # fmt: skip
    print(f"{'embedder':<18}{'dtype':>9}{'workers':>9}  {'way':<17}{'passages/s':>11}{'vs encoder alone':>18}")
    for label, dtype, workers, rate in rows:
        for way, value in rate.items():
            print(f"{label:<18}{dtype:>9}{workers:>9}  {way:<17}{value:>11.0f}{value / rate['encoder alone']:>17.2f}x")
    label, *_, rate = rows[-1]
    per_s = rate["pipeline"] * words / WIKI18_WORDS  # compute grows with passage length
    print(
        f"\nwiki-18 with {label} through the pipeline on this device: {WIKI18_PASSAGES:,} passages / "
        f"({rate['pipeline']:.0f} passages/s x {words:.0f}/{WIKI18_WORDS} words) = "
        f"{WIKI18_PASSAGES / per_s / 60:.0f} min"
    )


if __name__ == "__main__":
    main()
