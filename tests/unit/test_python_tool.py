"""The python and noop tools and the tool registry.

Calls run in the default isolated mode (a child process) unless a test passes in-process
objects (an Event, a Barrier) as inputs: those say ``isolated=False``.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import inspect
import logging
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from noetl.dsl.tool_schema import TOOL_KINDS
from noetl.tools import KNOWN_KINDS, ToolCall, ToolError, UnknownToolError, get_tool
from noetl.tools.python import DEFAULT_TIMEOUT, PythonTool, configure, execute_python


def python_call(code: str, inputs: Mapping[str, Any] | None = None, **config: Any) -> ToolCall:
    return ToolCall(
        kind="python",
        config={"code": code, **config},
        input=dict(inputs or {}),
        execution_id=1,
        step="step",
    )


async def run_python(code: str, inputs: Mapping[str, Any] | None = None, **config: Any) -> Any:
    return await get_tool("python").run(python_call(code, inputs, **config))


async def python_error(
    code: str, inputs: Mapping[str, Any] | None = None, **config: Any
) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await run_python(code, inputs, **config)
    return caught.value


# -- where the result comes from ------------------------------------------------------------


@pytest.mark.asyncio
async def test_top_level_return_is_the_result() -> None:
    assert await run_python("x = 2\nreturn x * 21") == 42


@pytest.mark.asyncio
async def test_return_inside_a_top_level_block_is_a_top_level_return() -> None:
    code = "for n in range(10):\n    if n == 3:\n        return n\n"
    assert await run_python(code) == 3


@pytest.mark.asyncio
async def test_return_inside_a_def_is_not_a_top_level_return() -> None:
    code = "def helper():\n    return 5\nresult = helper() + 1\n"
    assert await run_python(code) == 6


@pytest.mark.asyncio
async def test_top_level_return_code_can_rebind_an_input() -> None:
    assert await run_python("count = count + 1\nreturn count", {"count": 1}) == 2


@pytest.mark.asyncio
async def test_top_level_return_wins_over_main_and_result() -> None:
    code = "result = 'global'\ndef main():\n    return 'main'\nreturn 'returned'\n"
    assert await run_python(code) == "returned"


@pytest.mark.asyncio
async def test_main_receives_matching_inputs() -> None:
    code = "def main(a, b=10):\n    return [a, b]\n"
    assert await run_python(code, {"a": 1, "b": 2, "unused": 3}) == [1, 2]


@pytest.mark.asyncio
async def test_main_parameter_named_input_data_gets_all_inputs() -> None:
    code = "def main(input_data):\n    return input_data\n"
    assert await run_python(code, {"a": 1, "b": 2}) == {"a": 1, "b": 2}


@pytest.mark.asyncio
async def test_main_var_keyword_parameter_gets_all_inputs() -> None:
    code = "def main(a, **rest):\n    return rest\n"
    assert await run_python(code, {"a": 1, "b": 2, "c": 3}) == {"b": 2, "c": 3}


@pytest.mark.asyncio
async def test_main_wins_over_global_result() -> None:
    code = "result = 'global'\ndef main():\n    return 'main'\n"
    assert await run_python(code) == "main"


@pytest.mark.asyncio
async def test_async_main_is_awaited() -> None:
    code = "async def main(a):\n    return a * 2\n"
    assert await run_python(code, {"a": 4}) == 8


@pytest.mark.asyncio
async def test_global_result_is_the_result() -> None:
    assert await run_python("result = {'status': 'ok', 'n': n}", {"n": 1}) == {
        "status": "ok",
        "n": 1,
    }


@pytest.mark.asyncio
async def test_code_without_result_gives_none() -> None:
    assert await run_python("x = 1") is None


# -- inputs and config ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_inputs_are_global_variables() -> None:
    assert await run_python("result = message.upper()", {"message": "hi"}) == "HI"


@pytest.mark.asyncio
async def test_input_data_holds_all_inputs() -> None:
    code = "result = input_data.get('a', 0) + input_data.get('missing', 10)"
    assert await run_python(code, {"a": 1}) == 11


@pytest.mark.asyncio
async def test_script_is_an_alias_for_code() -> None:
    call = ToolCall("python", {"script": "result = 7"}, {}, 1, "step")
    assert await get_tool("python").run(call) == 7


@pytest.mark.asyncio
async def test_inline_script_source_mapping_is_accepted() -> None:
    script = {"uri": "inline", "source": {"type": "inline", "code": "result = 'inline'"}}
    call = ToolCall("python", {"script": script}, {}, 1, "step")
    assert await get_tool("python").run(call) == "inline"


@pytest.mark.asyncio
async def test_missing_code_is_a_tool_error() -> None:
    call = ToolCall("python", {}, {}, 1, "step")
    with pytest.raises(ToolError, match="needs `code`"):
        await get_tool("python").run(call)


@pytest.mark.asyncio
async def test_indented_code_is_dedented() -> None:
    assert await run_python("    x = 1\n    result = x + 1\n") == 2


@pytest.mark.asyncio
async def test_libs_are_imported_under_their_alias() -> None:
    assert await run_python("result = jsonlib.dumps([1])", libs={"jsonlib": "json"}) == "[1]"


@pytest.mark.asyncio
async def test_main_guard_does_not_run_main_twice() -> None:
    code = (
        "calls = []\n"
        "def main():\n    calls.append(1)\n    return len(calls)\n"
        "if __name__ == '__main__':\n    main()\n"
    )
    assert await run_python(code) == 1


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_exception_message_is_the_last_traceback_line() -> None:
    error = await python_error("x = 1\ny = x / 0\n")
    assert error.message == "ZeroDivisionError: division by zero"
    assert not error.retryable


@pytest.mark.asyncio
async def test_failed_assert_message_is_the_assert_message() -> None:
    error = await python_error("got = 2\nassert got == 3, 'expected 3'\n")
    assert error.message == "AssertionError: expected 3"


@pytest.mark.asyncio
async def test_syntax_error_message_includes_the_line_number() -> None:
    error = await python_error("x = 1\ny = (\n")
    assert error.message.startswith("SyntaxError: ")
    assert "(line 2)" in error.message


@pytest.mark.asyncio
async def test_traceback_in_details_shows_the_user_code_line() -> None:
    error = await python_error("x = 1\nraise ValueError('bad value')\n")
    traceback_text = error.details["traceback"]
    assert "line 2" in traceback_text
    assert "raise ValueError('bad value')" in traceback_text
    assert traceback_text.strip().endswith("ValueError: bad value")


@pytest.mark.asyncio
async def test_user_defined_exception_message_has_no_module_prefix() -> None:
    error = await python_error("class Boom(Exception):\n    pass\nraise Boom('now')\n")
    assert error.message == "Boom: now"


@pytest.mark.asyncio
async def test_main_missing_a_required_input_is_a_type_error() -> None:
    error = await python_error("def main(needed):\n    return needed\n")
    assert error.message.startswith("TypeError: main() missing 1 required positional argument")


@pytest.mark.asyncio
async def test_sys_exit_is_a_tool_error() -> None:
    error = await python_error("import sys\nsys.exit(3)\n")
    assert error.message == "SystemExit: 3"


# -- stdout and stderr ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_stdout_is_not_part_of_the_result() -> None:
    assert await run_python("print('noise')\nresult = 'value'") == "value"


@pytest.mark.asyncio
async def test_stdout_and_stderr_are_in_error_details() -> None:
    code = "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\n1 / 0\n"
    error = await python_error(code)
    assert error.details["stdout"] == "to stdout\n"
    assert error.details["stderr"] == "to stderr\n"


@pytest.mark.asyncio
async def test_stdout_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="noetl.tools.python"):
        await run_python("print('visible in logs')")
    assert "visible in logs" in caplog.text


def test_execute_python_returns_the_captured_output() -> None:
    run = execute_python("import sys\nprint('out')\nsys.stderr.write('err')\nresult = 1", {})
    assert (run.value, run.stdout, run.stderr) == (1, "out\n", "err")


@pytest.mark.asyncio
async def test_stdout_of_concurrent_calls_does_not_mix() -> None:
    barrier = threading.Barrier(2)
    code = (
        "print(name, 'first')\nbarrier.wait(5)\nprint(name, 'second')\nraise RuntimeError(name)\n"
    )
    calls = [
        run_python(code, {"name": name, "barrier": barrier}, isolated=False) for name in ("a", "b")
    ]
    errors = await asyncio.gather(*calls, return_exceptions=True)
    assert [error.details["stdout"] for error in errors if isinstance(error, ToolError)] == [
        "a first\na second\n",
        "b first\nb second\n",
    ]


@pytest.mark.asyncio
async def test_print_outside_a_call_still_reaches_the_real_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await run_python("print('captured')")
    sys.stdout.write("outside\n")
    assert capsys.readouterr().out == "outside\n"


# -- JSON-ready results ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_tuples_and_sets_become_lists() -> None:
    assert await run_python("return {'t': (1, 2), 's': {3, 1, 2}}") == {
        "t": [1, 2],
        "s": [1, 2, 3],
    }


@pytest.mark.asyncio
async def test_values_json_cannot_hold_become_strings() -> None:
    code = (
        "import datetime, decimal\n"
        "return [datetime.date(2024, 1, 2), decimal.Decimal('1.10'), float('nan'), {1: 'a'}]"
    )
    assert await run_python(code) == ["2024-01-02", "1.10", "nan", {"1": "a"}]


@pytest.mark.timeout(30)
@pytest.mark.asyncio
async def test_in_process_values_json_cannot_hold_become_strings() -> None:
    inputs = {"datetime": datetime, "decimal": decimal}
    code = "return [datetime.date(2024, 1, 2), decimal.Decimal('1.10'), float('nan'), {1: 'a'}]"
    assert await run_python(code, inputs, isolated=False) == [
        "2024-01-02",
        "1.10",
        "nan",
        {"1": "a"},
    ]


@pytest.mark.asyncio
async def test_a_circular_result_is_a_tool_error() -> None:
    error = await python_error("x = []\nx.append(x)\nreturn x\n")
    assert "circular reference" in error.message


# -- timeouts and the event loop ------------------------------------------------------------


@pytest.mark.asyncio
async def test_timeout_raises_a_retryable_tool_error() -> None:
    release = threading.Event()
    try:
        error = await python_error(
            "release.wait(10)", {"release": release}, timeout_seconds=0.1, isolated=False
        )
    finally:
        release.set()
    assert error.message == "python step timed out after 0.1 s"
    assert error.retryable


@pytest.mark.asyncio
async def test_bad_timeout_is_a_tool_error() -> None:
    error = await python_error("result = 1", timeout_seconds="soon")
    assert error.message == "timeout_seconds must be a positive number, got 'soon'"


@pytest.mark.asyncio
async def test_event_loop_stays_free_while_code_runs() -> None:
    release = threading.Event()

    async def release_soon() -> None:
        await asyncio.sleep(0.01)
        release.set()

    result, _ = await asyncio.gather(
        run_python("return release.wait(5)", {"release": release}, isolated=False),
        release_soon(),
    )
    assert result is True


@pytest.mark.timeout(30)
@pytest.mark.asyncio
async def test_event_loop_stays_free_while_isolated_code_runs(tmp_path: Path) -> None:
    flag = tmp_path / "released"

    async def release_soon() -> None:
        await asyncio.sleep(0.05)
        flag.write_text("go")

    code = (
        "import pathlib, time\n"
        "flag = pathlib.Path(path)\n"
        "deadline = time.monotonic() + 5\n"
        "while not flag.exists() and time.monotonic() < deadline:\n"
        "    time.sleep(0.005)\n"
        "return flag.exists()\n"
    )
    result, _ = await asyncio.gather(run_python(code, {"path": str(flag)}), release_soon())
    assert result is True


@pytest.mark.timeout(30)
def test_the_default_timeout_is_five_minutes() -> None:
    assert DEFAULT_TIMEOUT == 300


# -- isolation config -----------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.asyncio
async def test_isolated_must_be_a_boolean() -> None:
    error = await python_error("result = 1", isolated="sometimes")
    assert error.message == "isolated must be true or false, got 'sometimes'"


@pytest.mark.timeout(30)
@pytest.mark.asyncio
async def test_isolated_code_runs_in_another_process() -> None:
    code = "import os\nreturn os.getpid()"
    assert await run_python(code) != os.getpid()
    assert await run_python(code, isolated=False) == os.getpid()


@pytest.mark.timeout(30)
@pytest.mark.asyncio
async def test_an_input_that_cannot_be_pickled_is_a_tool_error() -> None:
    error = await python_error("result = 1", {"lock": threading.Lock()})
    assert error.message == (
        "python step input cannot be sent to an isolated process: "
        "cannot pickle '_thread.lock' object"
    )


@pytest.mark.timeout(30)
@pytest.mark.asyncio
@pytest.mark.parametrize("isolated", [True, False])
async def test_a_tool_error_raised_by_the_code_keeps_its_message_and_retryable(
    isolated: bool,
) -> None:
    code = "from noetl.tools.base import ToolError\nraise ToolError('try later', retryable=True)\n"
    error = await python_error(code, isolated=isolated)
    assert (error.message, error.retryable) == ("try later", True)


@pytest.mark.timeout(30)
def test_configure_rejects_a_pool_without_processes() -> None:
    with pytest.raises(ValueError, match="pool_size must be a positive integer"):
        configure(pool_size=0)
    with pytest.raises(ValueError, match="memory_mb must be a non-negative integer"):
        configure(memory_mb=-1)


@pytest.mark.timeout(30)
def test_python_tool_has_an_async_close_for_close_tools() -> None:
    assert inspect.iscoroutinefunction(PythonTool().close)


# -- noop and the registry ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_noop_returns_the_configured_result() -> None:
    call = ToolCall("noop", {"result": {"a": 1}, "message": "ignored"}, {}, 1, "step")
    assert await get_tool("noop").run(call) == {"a": 1}


@pytest.mark.asyncio
async def test_noop_returns_the_message() -> None:
    call = ToolCall("noop", {"message": "routing"}, {}, 1, "step")
    assert await get_tool("noop").run(call) == {"message": "routing"}


@pytest.mark.asyncio
async def test_noop_without_config_returns_an_empty_dict() -> None:
    assert await get_tool("noop").run(ToolCall("noop", {}, {}, 1, "step")) == {}


def test_every_worker_tool_kind_of_the_language_is_known() -> None:
    assert TOOL_KINDS - {"workbook", "playbook"} == KNOWN_KINDS
    assert {get_tool(kind).kind for kind in KNOWN_KINDS} == KNOWN_KINDS


def test_unknown_kind_names_known_kinds() -> None:
    with pytest.raises(UnknownToolError) as caught:
        get_tool("fortran")
    assert str(caught.value) == "unknown tool kind 'fortran'; known kinds: " + ", ".join(
        sorted(KNOWN_KINDS)
    )
    assert isinstance(caught.value, ToolError)


def test_tool_error_keeps_retryable_and_details() -> None:
    error = ToolError("boom", retryable=True, details={"status": 503})
    assert (str(error), error.retryable, error.details) == ("boom", True, {"status": 503})


def test_the_isolated_child_notices_every_change_of_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After each step the child compares its environment with the one it started with (in
    C, on the encoded dict behind os.environ) and puts it back when a step changed it."""
    from noetl.tools.python_exec import _Environ

    monkeypatch.setenv("NOETL_TEST_KEPT", "a")
    started = _Environ()
    assert not started.changed()
    for name, value in (
        ("NOETL_TEST_NEW", "1"),
        ("NOETL_TEST_KEPT", "b"),
        ("NOETL_TEST_KEPT", None),
    ):
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
        assert started.changed()
        monkeypatch.undo()
        monkeypatch.setenv("NOETL_TEST_KEPT", "a")
        assert not started.changed()
