"""Generation engines behind one interface (:class:`Engine`).

* :mod:`research.engines.vllm_engine` — vLLM in-process, continuous batching (default);
  also over the synchronous ``vllm.LLM`` TRL colocates for GRPO rollouts.
* :mod:`research.engines.hf` — plain transformers, portable.
* :mod:`research.engines.upstream` — a running ``vllm serve`` deployment (scale-out).

:func:`research.engines.args.open_engine` opens any of them from an
:class:`~research.engines.args.EngineArgs` (every field a CLI flag);
:mod:`research.engines.card` reads and writes a checkpoint's ``research.json``.

The contract they implement (``Engine``, ``Chunk``, ``SamplingOptions``) is the protocol's
(:mod:`research.protocol.engine`): the engines depend on the protocol, never the reverse.
The implementations import their heavy dependencies lazily; import them by module.
"""

from research.engines.base import BaseEngine, Generation, collect
from research.protocol.engine import GREEDY, Chunk, Engine, SamplingOptions

__all__ = ["GREEDY", "BaseEngine", "Chunk", "Engine", "Generation", "SamplingOptions", "collect"]
