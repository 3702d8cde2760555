"""Each protocol against outputs its reference repository's own code produced (``bench/protocol_fidelity.py``).

The cases (prompts, the text inserted after a turn, answers, rewards; 300 per protocol) were
run through the reference functions at the pinned commits and recorded with their outputs in
``reference_cases.json.gz``; regenerate with the command in the bench script's docstring.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from research.protocol import PROTOCOL_NAMES
from research.testbed.models import load_tokenizer

CASES = json.loads(gzip.decompress((Path(__file__).parent / "reference_cases.json.gz").read_bytes()))
_BENCH = Path(__file__).parents[2] / "bench" / "protocol_fidelity.py"
_spec = importlib.util.spec_from_file_location("protocol_fidelity", _BENCH)
fidelity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fidelity)


def test_the_cases_come_from_the_pinned_commits():
    assert CASES["commits"] == {
        "research": "re-search",
        "recall": "aaf16b31c83702cdd3c7f7a0ad431efce7904b63",
        "search-r1": "a14dc3a4ffc6fe88c1e95038d9738e21ba3f7a06",
    }
    assert {name: len(cases) for name, cases in CASES["cases"].items()} == dict.fromkeys(PROTOCOL_NAMES, 300)


@pytest.mark.parametrize("name", PROTOCOL_NAMES)
def test_every_case_matches_the_reference(name):
    tok = load_tokenizer()  # the vendored Qwen2.5 one, as when the cases were recorded
    differ = [(i, bad) for i, case in enumerate(CASES["cases"][name]) if (bad := fidelity.check(name, case, tok))]
    assert differ == [], [(CASES["cases"][name][i], bad) for i, bad in differ[:3]]
