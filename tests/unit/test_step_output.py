"""Step output: bounded capture, masking of credential values, traceback line mapping."""

from __future__ import annotations

import asyncio

from noetl.masking import Mask
from noetl.server.steplogs import code_starts, map_lines
from noetl.tools import output


def test_each_stream_keeps_its_last_characters_with_a_note_when_cut() -> None:
    captured = output.CommandOutput(limit=10)
    captured.write("stdout", "0123456789")
    assert captured.text("stdout") == "0123456789"
    captured.write("stdout", "abc")
    captured.write("stderr", "e")
    assert captured.text("stdout") == "[... 3 characters cut; the last 10 kept ...]\n3456789abc"
    assert captured.as_dict() == {"stdout": captured.text("stdout"), "stderr": "e"}
    captured.write("stdout", "x" * 25)
    assert captured.text("stdout").endswith("\n" + "x" * 10)
    assert "28 characters cut" in captured.text("stdout")


def test_records_go_to_the_command_being_run_and_nowhere_outside() -> None:
    output.record("stdout", "lost")

    async def tool(text: str) -> None:
        await asyncio.sleep(0)
        output.record("stdout", text)

    async def command(text: str) -> dict[str, str]:
        with output.capturing() as captured:
            await asyncio.gather(tool(text), asyncio.create_task(tool(text)))
        return captured.as_dict()

    async def both() -> list[dict[str, str]]:
        return list(await asyncio.gather(command("a"), command("b")))

    assert asyncio.run(both()) == [{"stdout": "aa"}, {"stdout": "bb"}]


def test_credential_values_are_masked_longest_first() -> None:
    secrets = [{"password": "hunter22", "user": "hunter", "port": 5432, "ok": True, "n": None}]
    text = "login hunter with hunter22 on 5432 True"
    # the one masking rule (noetl.masking): strings, longest first; an address field such as
    # the port is not a secret
    assert Mask(secrets).text(text)[0] == "login *** with *** on 5432 True"
    assert Mask([{"short": "ab"}]).text("abc")[0] == "abc"  # too short to mask safely


PLAYBOOK = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: lines}
workbook:
  - name: shared
    tool:
      kind: python
      code: |
        x = 1
        raise ValueError(x)
workflow:
  - step: start
    tool: {kind: python, code: "raise ValueError(1)"}
    next: [block]
  - step: block
    tool:
      kind: python
      code: |
        a = 1
        b = a / 0
    next: [reused]
  - step: reused
    tool: {kind: workbook, name: shared}
    next: [two]
  - step: two
    tool:
      - first: {kind: python, code: "x = 1"}
      - second: {kind: python, code: "y = 2"}
    next: [three]
  - step: three
    tool:
      - name: fetch
        kind: python
        code: |
          import json
          raise KeyError("nope")
      - {kind: python, code: "z = 3"}
"""


def test_python_code_lines_map_to_the_playbook_lines() -> None:
    starts = code_starts(PLAYBOOK)
    assert starts == {  # `two` and `three` have more than one: by their items' labels only
        "start": 13,
        "start item item0": 13,  # a single tool with a policy runs as a one-item pipeline
        "block": 19,
        "block item item0": 19,
        "reused": 9,
        "reused item item0": 9,
        "two item first": 27,
        "two item second": 28,
        "three item fetch": 35,
        "three item item1": 37,
    }
    traceback = (
        'Traceback (most recent call last):\n  File "<python step block #4>", line 2, in <module>\n'
        'ZeroDivisionError: division by zero\n  File "<python step two #5>", line 1, in <module>\n'
    )
    mapped = map_lines(traceback, starts)
    assert 'File "<python step block #4>", line 2 (playbook line 20), in <module>' in mapped
    assert 'File "<python step two #5>", line 1, in <module>' in mapped
    item = map_lines('File "<python step three item fetch #6>", line 2, in <module>', starts)
    assert (
        item == 'File "<python step three item fetch #6>", line 2 (playbook line 36), in <module>'
    )


def test_a_playbook_that_no_longer_parses_maps_nothing() -> None:
    assert code_starts("workflow: [") == {}
    assert map_lines('File "<python step a #1>", line 1', {}) == 'File "<python step a #1>", line 1'
