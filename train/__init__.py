"""Training: ``research-train``, the ReSearch GRPO recipe on TRL with retrieved tokens masked.

* :mod:`~research.train.config` — the paper's hyper-parameters, model aliases, the GPU plan.
* :mod:`~research.train.data` — the training questions (:mod:`research.questions`) as a TRL dataset.
* :mod:`~research.train.rollout` — TRL ``rollout_func`` running the shared search loop; the reward.
* :mod:`~research.train.curves` — per-step jsonl/TensorBoard metrics and the paper's curves.
"""
