"""Evaluation: the paper's table (EM, F1, LLM-as-a-Judge) for ReSearch and its baselines.

The questions come from :mod:`research.questions`.

* :mod:`~research.evaluation.methods` — ``research`` and the paper's baselines.
* :mod:`~research.evaluation.judge` — LLM-as-a-Judge over any OpenAI-compatible endpoint.
* :mod:`~research.evaluation.runner` — resumable concurrent runs, ``summary.json``, table, chart.
"""
