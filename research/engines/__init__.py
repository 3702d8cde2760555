"""Generation engines behind one interface (:class:`Engine`).

* :mod:`research.engines.vllm_engine` — vLLM in-process, continuous batching (default);
  also over the synchronous ``vllm.LLM`` TRL colocates for GRPO rollouts.
* :mod:`research.engines.hf` — plain transformers, portable.
* :mod:`research.engines.upstream` — a running ``vllm serve`` deployment (scale-out).

:func:`research.engines.args.open_engine` opens any of them from an
:class:`~research.engines.args.EngineArgs` (every field a CLI flag);
:mod:`research.engines.card` reads and writes a checkpoint's ``research.json``.

The implementations import their heavy dependencies lazily; import them by module.
"""

from research.engines.base import GREEDY, Chunk, Engine, Generation, SamplingOptions, collect

__all__ = ["GREEDY", "Chunk", "Engine", "Generation", "SamplingOptions", "collect"]
