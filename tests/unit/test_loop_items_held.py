"""The item lists handed to a decision are those of the loops with iterations in flight,
found from the commands in flight (server/loop_data.py), whatever the steps run before."""

from __future__ import annotations

from noetl.engine import ExecutionState
from noetl.engine.state import CommandRef
from noetl.server.loop_data import LoopDataLoader


def test_the_running_loops_items_come_from_the_commands_in_flight() -> None:
    loader = LoopDataLoader()
    loader._items[(7, "fan", 2)] = ["a", "b", "c"]
    loader._items[(7, "fan", 1)] = ["an earlier run"]
    loader._items[(8, "fan", 2)] = ["another execution"]
    state = ExecutionState(
        7,
        commands={
            "fan:2[0]": CommandRef("fan", 2, 0),
            "fan:2[1]": CommandRef("fan", 2, 1),
            "next:1": CommandRef("next", 1),
            "other:1[0]": CommandRef("other", 1, 0),  # a loop whose items are not held
        },
    )
    assert loader._running_items(state) == {("fan", 2): ["a", "b", "c"]}
    assert loader._running_items(ExecutionState(7)) == {}
