"""What TRL's ``rollout_func`` returned, recorded from outside (the trainer's own attribute, wrapped)."""

from __future__ import annotations

from typing import Any


def record_rollouts(trainer: Any) -> list[dict[str, list[Any]]]:
    """Wrap ``trainer.rollout_func``; the returned list gets each call's output (prompt and completion ids,
    ``env_mask``, ``responses``, ``searches``, ``well_formed``), latest last."""
    calls: list[dict[str, list[Any]]] = []
    inner = trainer.rollout_func

    def recording(prompts: Any, trainer: Any) -> dict[str, list[Any]]:
        calls.append(inner(prompts, trainer))
        return calls[-1]

    trainer.rollout_func = recording
    return calls
