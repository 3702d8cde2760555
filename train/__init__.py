"""Training: ``research-train``, the ReSearch GRPO recipe on TRL with retrieved tokens masked.

* :mod:`~research.train.config` — the paper's hyper-parameters, model aliases, the GPU plan.
* :mod:`~research.train.data` — MuSiQue train/validation prompts.
* :mod:`~research.train.rollout` — TRL ``rollout_func`` running the shared search loop; the reward.
* :mod:`~research.train.logging` — per-step jsonl/TensorBoard metrics and the paper's curves.
"""
