"""The wire vocabulary: typed records with one codec each, the same on both sides."""

from __future__ import annotations

import json

import pytest

from noetl.protocol.command import ClaimedCommand, ClaimReply, LeaseReply, Refusal
from noetl.protocol.events import CommandStatus, EventType, ExecutionStatus
from noetl.protocol.outcome import Outcome, Report, ReportReply

COMMAND = ClaimedCommand(
    execution_id=2**62,
    event_id=2**62 + 1,
    command_id="x:start[3]",
    step="start",
    tool={"kind": "noop", "result": 1},
    input={"a": [1, 2]},
    attempt=2,
    worker_id="w1",
    iteration=3,
    lease_seconds=30.0,
)


def test_a_claimed_command_survives_the_wire_with_ids_as_strings() -> None:
    wire = json.loads(json.dumps(COMMAND.to_json()))
    assert wire["execution_id"] == str(2**62) and wire["event_id"] == str(2**62 + 1)
    assert ClaimedCommand.from_json(wire) == COMMAND
    assert COMMAND.kind == "noop"


@pytest.mark.parametrize(
    "body",
    [None, [], {}, {**COMMAND.to_json(), "tool": "noop"}, {**COMMAND.to_json(), "attempt": "x"}],
)
def test_anything_else_is_a_value_error(body: object) -> None:
    with pytest.raises(ValueError, match="not a claimed command"):
        ClaimedCommand.from_json(body)


def test_a_claim_reply_round_trips_claims_and_refusals() -> None:
    reply = ClaimReply((COMMAND,), {7: Refusal(409, "held"), 8: Refusal(404, "gone")})
    assert ClaimReply.from_json(json.loads(json.dumps(reply.to_json()))) == reply
    with pytest.raises(ValueError, match="not a claim reply"):
        ClaimReply.from_json({"claimed": []})


def test_a_lease_reply_says_keep_going_only_for_the_live_claim() -> None:
    assert LeaseReply(CommandStatus.CLAIMED).keep_going
    assert not LeaseReply(CommandStatus.CLAIMED, superseded=True).keep_going
    assert not LeaseReply(CommandStatus.CANCELLED).keep_going
    wire = LeaseReply(CommandStatus.CLAIMED, superseded=True).to_json()
    assert wire == {"status": "CLAIMED", "superseded": True, "continue": False}
    assert LeaseReply.from_json(wire) == LeaseReply(CommandStatus.CLAIMED, superseded=True)


def test_a_report_is_the_body_of_the_seeds_outcome_events() -> None:
    done = Report(5, "c", 1, "w", Outcome.success({"r": 1}, duration=0.5, variables={"v": 1}))
    failed = Report(5, "c", 2, "w", Outcome.failure("boom", problems=("set x: y",)))
    assert done.to_json() == {
        "execution_id": 5,
        "event_type": "command.completed",
        "command_id": "c",
        "attempt": 1,
        "worker_id": "w",
        "result": {"r": 1},
        "error": None,
        "duration": 0.5,
        "variables": {"v": 1},
        "problems": None,
        "log": None,
    }
    printed = Outcome.failure("boom", log={"stderr": "Traceback ..."})
    assert Report(5, "c", 1, "w", printed).to_json()["log"] == {"stderr": "Traceback ..."}
    assert failed.event_type is EventType.COMMAND_FAILED
    assert failed.outcome.status is CommandStatus.FAILED
    assert failed.to_json()["problems"] == ["set x: y"]
    assert ReportReply.from_json({"status": "RUNNING", "issued": 2}) == ReportReply(
        ExecutionStatus.RUNNING, 2
    )


def test_a_report_reply_may_carry_the_next_command_and_a_report_may_decline_it() -> None:
    reply = ReportReply(ExecutionStatus.RUNNING, 1, COMMAND)
    assert ReportReply.from_json(json.loads(json.dumps(reply.to_json()))) == reply
    assert "next" not in ReportReply(ExecutionStatus.RUNNING, 1).to_json()
    declining = Report(5, "c", 1, "w", Outcome.success(1), takes_next=False)
    assert declining.to_json()["takes_next"] is False
    assert "takes_next" not in Report(5, "c", 1, "w", Outcome.success(1)).to_json()
