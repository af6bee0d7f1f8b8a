"""Collect each conformance case's outcome and print a pass/fail table at the end."""

from __future__ import annotations

from typing import Any

import pytest

OUTCOMES: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "test_conformance_case" not in report.nodeid or report.when not in {"setup", "call"}:
        return
    case = report.nodeid.split("[", 1)[-1].rstrip("]")
    if report.when == "setup" and report.outcome == "passed":
        return
    OUTCOMES[case] = report.outcome


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not OUTCOMES:
        return
    terminalreporter.section("conformance cases")
    width = max(len(case) for case in OUTCOMES)
    for case, outcome in OUTCOMES.items():
        terminalreporter.write_line(f"{case:<{width}}  {outcome.upper()}")
    passed = sum(outcome == "passed" for outcome in OUTCOMES.values())
    terminalreporter.write_line(f"{passed} of {len(OUTCOMES)} cases passed")
