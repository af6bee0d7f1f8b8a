"""The FULL-tier marker, and a pass/fail table of the conformance cases at the end of the run."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.table import DETAILS

OUTCOMES: dict[str, str] = {}
FULL_TIER = "conformance_full"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{FULL_TIER}: slow/heavy conformance cases (FULL tier; -m {FULL_TIER})"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The default run does not select the FULL tier; `-m conformance_full` does."""
    if FULL_TIER in (config.option.markexpr or ""):
        return
    full = [item for item in items if item.get_closest_marker(FULL_TIER)]
    if full:
        config.hook.pytest_deselected(items=full)
        items[:] = [item for item in items if not item.get_closest_marker(FULL_TIER)]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "test_conformance_case[" not in report.nodeid:
        return
    case = report.nodeid.split("[", 1)[-1][:-1]
    if report.when == "setup" and report.outcome != "passed":
        OUTCOMES[case] = "error" if report.outcome == "failed" else report.outcome
    elif report.when == "call":
        if hasattr(report, "wasxfail"):
            OUTCOMES[case] = "xfail" if report.outcome == "skipped" else "xpass"
        elif report.failed and "XPASS(strict)" in str(report.longrepr):
            OUTCOMES[case] = "xpass(strict)"  # listed in known_failures.py but passes now
        else:
            OUTCOMES[case] = report.outcome


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not OUTCOMES:
        return
    terminalreporter.section("conformance cases")
    width = max(len(case) for case in OUTCOMES)
    for case, outcome in OUTCOMES.items():
        detail = DETAILS.get(case, "")
        terminalreporter.write_line(f"{case:<{width}}  {outcome.upper():<13} {detail[:160]}")
    counts: dict[str, int] = {}
    for outcome in OUTCOMES.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    terminalreporter.write_line(f"{len(OUTCOMES)} cases: {summary}")
