"""What ``train`` sets up for a multi-process CPU run (``bench/two_process_train.py`` runs one end to end)."""

from __future__ import annotations

import pytest
import torch

from research.train.trainer import load_onto_indexed_cpus


def test_a_checkpoint_loads_onto_cpu_0_as_a_resumed_multi_process_cpu_run_asks(tmp_path):
    """accelerate gives each CPU process ``cpu:0``; transformers resumes the optimizer with it as map_location."""
    path = tmp_path / "optimizer.pt"
    torch.save({"state": torch.arange(4.0)}, path)
    cpu_0 = torch.device("cpu", 0)
    with pytest.raises(RuntimeError, match="don't know how to restore data location"):
        torch.load(path, map_location=cpu_0, weights_only=True)
    load_onto_indexed_cpus()
    assert torch.equal(torch.load(path, map_location=cpu_0, weights_only=True)["state"], torch.arange(4.0))
