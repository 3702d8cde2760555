"""Training fixtures: a real GRPOTrainer on the scripted tiny model, a real LanceDB index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from research.train.config import TrainConfig
from tests.support.training import values_in


@pytest.fixture
def train_values(tmp_path: Path, model_path: Path, script_index) -> dict[str, Any]:
    """The training set-up for one test (which may change some values)."""
    return values_in(tmp_path, model_path, script_index)


@pytest.fixture
def train_config(train_values: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**train_values)
