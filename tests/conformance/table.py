"""The per-case detail line the runner records for the pass/fail table (conftest.py)."""

from __future__ import annotations

DETAILS: dict[str, str] = {}
