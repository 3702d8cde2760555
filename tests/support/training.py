"""The training tests' set-up: the scripted model on two questions, a real LanceDB index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUESTION

QUESTIONS = [
    {"id": "fr", "question": SCRIPT_QUESTION, "golden_answers": [SCRIPT_ANSWER]},
    {"id": "sy", "question": "What is the capital of Sylvania?", "golden_answers": ["Trentino Falls"]},
]


def values_in(folder: Path, model_path: Path, script_index) -> dict[str, Any]:
    """The tests' training set-up as TrainConfig's keyword arguments, its files in ``folder``."""
    data = folder / "questions.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return dict(
        base=str(model_path),
        template="instruct",
        data=str(data),
        index=script_index.uri,
        output_dir=str(folder / "run"),
        prompts_per_step=2,
        num_generations=2,
        per_device_train_batch_size=2,
        max_completion_length=256,
        search_top_k=2,
        temperature=0.1,  # the scripted model only follows its script near greedy
        validation_size=0,
        learning_rate=1e-4,
        save_steps=1,
    )
