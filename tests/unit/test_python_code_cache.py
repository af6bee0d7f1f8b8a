"""A child's cache of compiled step code (`python_exec.CodeCache`): a cached run behaves as a
fresh compile would (its own file name in tracebacks, warnings printed each run)."""

from __future__ import annotations

import warnings

from noetl.tools.python_exec import CodeCache, run_code

RAISES_IN_A_FUNCTION = "def f(x):\n    raise ValueError(x)\nreturn f(p)\n"


def test_a_cached_run_names_its_own_call_in_the_traceback() -> None:
    cache = CodeCache()
    first = run_code(RAISES_IN_A_FUNCTION, {"p": "a"}, step="s", cache=cache)
    second = run_code(RAISES_IN_A_FUNCTION, {"p": "b"}, step="t", cache=cache)
    assert first["message"] == "ValueError: a"
    assert second["message"] == "ValueError: b"
    first_file = first["details"]["traceback"].split('"')[1]
    second_file = second["details"]["traceback"].split('"')[1]
    assert first_file.startswith("<python step s #")
    assert second_file.startswith("<python step t #")
    assert "raise ValueError(x)" in second["details"]["traceback"]  # the lines are found
    assert second["details"]["traceback"].count(second_file) == 2  # the function's frame too


def test_a_compile_warning_is_issued_on_every_run() -> None:
    cache = CodeCache()
    code = "x = 1\nif x is 1:\n    pass\nresult = x\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            assert run_code(code, {}, cache=cache)["value"] == 1
    assert [w.category for w in caught] == [SyntaxWarning, SyntaxWarning]
    assert caught[0].filename != caught[1].filename  # each run's own file name


def test_the_input_names_are_part_of_the_key() -> None:
    cache = CodeCache()
    code = "names = dir()\nreturn [name for name in ('a', 'b') if name in names]"
    assert run_code("return a", {"a": 1}, cache=cache)["value"] == 1
    assert run_code("return a", {"a": 2, "b": 3}, cache=cache)["value"] == 2
    assert run_code(code, {"a": 1}, cache=cache)["value"] == ["a"]
    assert run_code(code, {"a": 1, "b": 2}, cache=cache)["value"] == ["a", "b"]


def test_the_cache_keeps_at_most_its_size() -> None:
    cache = CodeCache(size=2)
    for n in range(5):
        assert run_code(f"result = {n}", {}, cache=cache)["value"] == n
    assert len(cache._entries) == 2
