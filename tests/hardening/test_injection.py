"""Injection: the quoting filters make a hostile payload plain data in shell and SQL text, and
`noetl validate` warns where a playbook splices caller data unquoted."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from noetl.config import Settings
from noetl.dsl.splices import splice_warnings
from noetl.dsl.template import render_string
from noetl.errors import TemplateError
from tests.conftest import run_playbook

HOSTILE = ["x; touch {marker}; echo $(id -u)", "it's", 'a"b', "$(id)", "`id`", "a\nb", "", "-rf"]


@given(st.text().filter(lambda s: "\x00" not in s))
def test_quote_is_one_shell_word_whatever_the_text(text: str) -> None:
    assert shlex.split(render_string("{{ v | quote }}", {"v": text})) == [text]


def test_quote_of_a_list_is_several_words_and_none_is_empty() -> None:
    assert shlex.split(render_string("{{ v | quote }}", {"v": ["a b", "c;d"]})) == ["a b", "c;d"]
    assert render_string("{{ v | quote }}", {"v": None}) == "''"


def test_sql_quoting_of_odd_values() -> None:
    assert render_string("{{ v | sql_literal }}", {"v": "it's"}) == "'it''s'"
    assert render_string("{{ v | sql_literal }}", {"v": None}) == "NULL"
    assert render_string("{{ v | sql_literal }}", {"v": True}) == "TRUE"
    assert render_string("{{ v | sql_literal }}", {"v": 42}) == "42"
    assert render_string("{{ v | sql_identifier }}", {"v": 'my "t"'}) == '"my ""t"""'
    for bad in ("\x00", ""):
        with pytest.raises(TemplateError):
            render_string("{{ v | sql_identifier }}", {"v": bad})


def test_sql_literal_and_identifier_round_trip_through_postgresql(settings: Settings) -> None:
    values = [*HOSTILE, "back\\slash", "'; DROP TABLE t; --", "ünï©ødé", "$$dollar$$"]
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        for value in values:
            literal = render_string("{{ v | sql_literal }}", {"v": value})
            ident = render_string("{{ v | sql_identifier }}", {"v": value or "x"})
            row = conn.execute(f"SELECT {literal}::text AS {ident}").fetchone()
            assert row is not None and row[0] == value


async def test_a_hostile_payload_runs_as_plain_text_when_quoted(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    marker = tmp_path / "PWNED"
    playbook = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: quoted, path: tests/quoted}
workload: {name: world}
workflow:
  - step: start
    tool: {kind: shell, command: "echo hello {{ name | quote }}"}
    next: [env]
  - step: env
    tool: {kind: shell, command: 'echo "hello $NAME"', env: {NAME: "{{ name }}"}}
"""
    hostile = HOSTILE[0].format(marker=marker)
    execution = await run_playbook(api, playbook, {"name": hostile})
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"]["stdout"].strip() == f"hello {hostile}"
    assert not marker.exists()


def test_validate_warns_about_unquoted_splices_only(tmp_path: Path) -> None:
    text = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: splices, path: tests/splices}
workload: {name: world, table: t}
workflow:
  - step: start
    tool:
      kind: shell
      command: "echo {{ name }} {{ name | quote }} {{ execution_id }}"
    next: [sql]
  - step: sql
    tool:
      - name: read
        kind: postgres
        query: >-
          SELECT {{ start.stdout }} FROM {{ table | sql_identifier }}
          WHERE b = {{ name | sql_literal }}
      - name: safe
        kind: duckdb
        query: "SELECT $1"
        params: ["{{ name }}"]
"""
    warnings = splice_warnings(text, "splices.yaml")
    assert [(w.field, w.line) for w in warnings] == [
        ("workflow[0].tool.command", 9),
        ("workflow[1].tool[0].query", 15),
    ]
    assert "{{ name }}" in warnings[0].message and "quote" in warnings[0].message
    assert "{{ start.stdout }}" in warnings[1].message and "params" in warnings[1].message
    path = tmp_path / "splices.yaml"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "noetl.cli.main", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr  # a warning, not an error
    assert done.stderr.count("warning:") == 2
