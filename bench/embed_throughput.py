"""Index-build embedding throughput: passages/s of our ``Embedder``, MiniLM and E5-base-v2's shape.

    python bench/embed_throughput.py                    # best device here (CUDA if present)
    python bench/embed_throughput.py --passages 2000    # a quicker CPU run

Passages are the bundled demo corpus (real Wikipedia paragraphs, 88 words on average;
wiki-18's are 100 words plus a title). Speed depends on the shape, not the weights, and
E5-base-v2 cannot be downloaded here: both embedders are built with random weights in
their real shapes (E5-base-v2 is BERT-base: 12 layers, 768 hidden; MiniLM-L6: 6 layers,
384 hidden) and the real bert-base-uncased WordPiece vocabulary both use (``--vocab``,
default: the one the shipped MiniLM package holds), so tokens per passage and FLOPs are
theirs. Our ``Embedder`` runs them as it runs the real ones (prefixes, batching, fp16 on
CUDA). Prints passages/s, the ratio to MiniLM and, from the E5 rate, the time to embed
all of wiki-18 (21,015,324 passages) on this device.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    import torch

    from research.retrieval.demo_corpus import read_passages
    from research.retrieval.embedders import DEFAULT_EMBEDDER, REGISTRY, Embedder, model_path
    from research.testbed.embedder import EMBEDDER

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--passages", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", help="cpu, cuda, cuda:0,cuda:1 ... (default: the best here)")
    p.add_argument("--vocab", help="folder of the bert-base-uncased tokenizer (default: the MiniLM package's)")
    args = p.parse_args()
    passages = [q.contents for q in islice(read_passages(), args.passages)]
    words = sum(len(c.split()) for c in passages) / len(passages)
    rows = []
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as tmp:
        vocab = args.vocab or model_path(EMBEDDER)
        for label, registered in (("all-MiniLM-L6-v2", EMBEDDER), ("e5-base-v2", DEFAULT_EMBEDDER)):
            spec = REGISTRY[registered]
            embedder = Embedder(spec.name, device=args.device, batch_size=args.batch_size)
            embedder.spec = replace(spec, name=str(shaped(label, vocab, Path(tmp))))
            embedder.encode_passages(passages[: args.batch_size])  # warm-up: load, kernels
            start = time.perf_counter()
            vectors = embedder.encode_passages(passages)
            seconds = time.perf_counter() - start
            embedder.close()
            dtype = next(embedder.model.parameters()).dtype
            rows.append((label, vectors.shape[1], str(dtype).removeprefix("torch."), len(passages) / seconds))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(f"\n{len(passages):,} passages ({words:.0f} words on average), batch {args.batch_size}, {device} ({name})")
    print(f"{'embedder':<20}{'dim':>6}{'dtype':>10}{'passages/s':>12}{'vs MiniLM':>11}")
    for label, dim, dtype, rate in rows:
        print(f"{label:<20}{dim:>6}{dtype:>10}{rate:>12.0f}{rate / rows[0][3]:>10.2f}x")
    rate = rows[-1][3] * words / WIKI18_WORDS  # compute grows with passage length
    print(
        f"\nwiki-18 with E5-base-v2 on this device: {WIKI18_PASSAGES:,} passages / "
        f"({rows[-1][3]:.0f} passages/s x {words:.0f}/{WIKI18_WORDS} words) = {WIKI18_PASSAGES / rate / 60:.0f} min"
    )


if __name__ == "__main__":
    main()
