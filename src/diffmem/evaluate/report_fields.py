"""Reading an audit report's fields (report.json of `diffmem audit`, `memorization_report`) the same way
everywhere: the CLI summary, comparison tables and sweep results. Torch-free, for every layer above.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ratio_tests_of"]


def ratio_tests_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The report's ratio tests by definition name (docs/method.md, "Metrics"): `ratio_tests` holds each
    definition (`carlini`, `nn1_nn2`; None where it could not be computed, left out here); reports
    written before it existed have only `ratio_test`, Carlini et al.'s definition."""
    tests = report.get("ratio_tests")
    if isinstance(tests, dict) and tests:
        return {str(k): v for k, v in tests.items() if isinstance(v, dict) and "fraction_below" in v}
    old = report.get("ratio_test")
    return {"carlini": old} if isinstance(old, dict) and "fraction_below" in old else {}
