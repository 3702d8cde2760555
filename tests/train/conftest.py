"""Training fixtures: a real GRPOTrainer on the scripted tiny model, a real LanceDB index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research.testbed.models import SCRIPT_ANSWER, SCRIPT_QUESTION
from research.train.config import TrainConfig

QUESTIONS = [
    {"id": "fr", "question": SCRIPT_QUESTION, "golden_answers": [SCRIPT_ANSWER]},
    {"id": "sy", "question": "What is the capital of Sylvania?", "golden_answers": ["Trentino Falls"]},
]


@pytest.fixture
def train_config(tmp_path: Path, model_path: Path, script_index) -> TrainConfig:
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return TrainConfig(
        base=str(model_path),
        template="instruct",
        data=str(data),
        index=script_index.uri,
        output=str(tmp_path / "run"),
        prompts_per_step=2,
        group_size=2,
        per_device_batch=2,
        max_response_tokens=256,
        top_k=2,
        temperature=0.1,  # the scripted model only follows its script near greedy
        validation_size=0,
        learning_rate=1e-4,
        save_steps=1,
    )
