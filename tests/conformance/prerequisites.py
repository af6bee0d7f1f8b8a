"""FULL-tier parents that DEFAULT-tier cases read tables from: run first, with a reduced workload.

The manifest header: cases run in manifest order on one database, and `after` names the earlier
cases whose tables a case reads. Seven DEFAULT-tier cases are `after` a slow/heavy (FULL-tier)
case, which the default run does not select, so the tables they read would not exist. The
default run therefore executes that parent first, as a prerequisite, with the reduced workload
below. Each parent sizes its work from its own workload keys (evidence quoted per entry), so a
smaller value runs the same steps (create the tables, seed them, fan out chunk workers, verify)
on fewer rows; the playbooks are not changed and no table is created by hand. A prerequisite
must meet `expect`: the manifest's expect for the parent, scaled to the reduced size.

When the parent has already run in the session (the FULL tier, `-m conformance_full`, runs it as
its own case earlier in manifest order) it is not run again.

Pure: the runner (test_conformance.py) does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tests.conformance.manifest import Case

# A reduced parent runs in seconds; its own timeout_s (up to 3 h) is for the full size.
PREREQUISITE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Reduced:
    payload: dict[str, Any]  # merged over the parent case's own payload
    expect: dict[str, Any]  # the parent's expect at the reduced size
    why: str  # which workload keys size the run, quoted from the playbook


REDUCED: dict[str, Reduced] = {
    "load_test/state_report_synthetic_load/state_report_synthetic_load.yaml": Reduced(
        payload={"total_items": 30, "batch_size": 30},
        expect={"status": "COMPLETED", "results": {"summarize": {"status": "completed"}}},
        why="setup_test_data seeds synthetic_state_report_load_items from "
        "generate_series(1, start.total_items); build_batch_plan cuts total_items into "
        "batch_size windows, one chunk-worker run each; summarize reconciles processed against "
        "the table's own count. 540/30 = 18 child runs -> 30/30 = 1 (the standalone worker then "
        "upserts those 30 rows).",
    ),
    "batch_execution/heavy_payload_pipeline_in_step/heavy_payload_pipeline_in_step.yaml": Reduced(
        payload={"seed_rows": 4, "batch_size": 2, "max_batches": 2},
        expect={
            "status": "COMPLETED",
            "results": {"summarize": {"data": {"missing_rows": 0, "stored_rows": 4}}},
        },
        why="prepare_source_and_target creates heavy_payload_source/_results and seeds "
        "generate_series(1, seed_rows); build_batch_plan makes max_batches windows of batch_size; "
        "validate_persisted_results expects LEAST(seed_rows, batch_size * max_batches) rows. "
        "240 rows in 6 child runs of 40 -> 4 rows in 2 child runs of 2 (payload_kb_per_item "
        "kept at 256).",
    ),
    "batch_execution/traveler_batch_enrichment_in_step/traveler_batch_enrichment_in_step.yaml": (
        Reduced(
            payload={"seed_rows": 4, "batch_size": 2, "max_batches": 2},
            expect={
                "status": "COMPLETED",
                "results": {
                    "summarize": {"data": {"missing_rows": 0, "stored_rows": 4, "valid_rows": 4}}
                },
            },
            why="prepare_source_and_target creates traveler_batch_source/_results and seeds "
            "generate_series(1, seed_rows); build_batch_plan makes max_batches windows of "
            "batch_size; the validation expects LEAST(seed_rows, batch_size * max_batches) rows. "
            "120 travelers in 4 child runs of 30 -> 4 in 2 child runs of 2.",
        )
    ),
    "batch_execution/server_oom_stress_test/server_oom_stress_test.yaml": Reduced(
        payload={"total_items": 6, "batch_size": 3},
        expect={
            "status": "COMPLETED",
            "results": {"summarize": {"is_complete": True, "processed_items": 6}},
        },
        why="setup_test_data seeds stress_test_items from generate_series(1, total_items); "
        "build_batch_plan cuts total_items into batch_size windows, one chunk-worker run each "
        "(each item still computes its ~55 KB, 600-field result); verify_completion_counts "
        "compares the table's counts. 3000 items in 60 child runs -> 6 items in 2 child runs.",
    ),
    "batch_execution/server_oom_stress_test_v2/server_oom_stress_test_v2.yaml": Reduced(
        payload={"total_items": 6, "batch_size": 3},
        expect={
            "status": "COMPLETED",
            "results": {"summarize": {"is_complete": True, "processed_items": 6}},
        },
        why="the same workload keys as server_oom_stress_test (the playbooks differ only in "
        "name and chunk worker): 3000 items in 60 child runs -> 6 items in 2 child runs.",
    ),
    "pft_flow_test/test_pft_flow.yaml": Reduced(
        payload={
            "num_facilities": 1,
            "patients_per_facility": 10,
            "pft_batch_size": 5,
            "batch_slots": [1, 2],
        },
        expect={"status": "COMPLETED"},
        why="start creates every pft_test_* table and seeds generate_series(1, num_facilities) "
        "facilities; setup_facility_work seeds patients_per_facility patients each and cuts them "
        "into pft_batch_size batches per data type; process_pft_action_batches runs one loop "
        "iteration per batch_slots entry, each claiming batches until the queue drains; "
        "check_results RAISEs unless every facility has patients_per_facility/"
        "patients_per_facility per data type. 10 x 1000 patients, 16 slots -> 1 x 10, 2 slots.",
    ),
}


def prerequisites(case: Case, by_id: dict[str, Case], ran: set[str]) -> list[Case]:
    """The FULL-tier cases a DEFAULT-tier case is `after` that have not run yet, reduced.

    A FULL-tier case needs none: in the FULL tier its parents run as cases, in manifest order.
    A FULL-tier parent without a REDUCED entry is an error: a new manifest case must say how to
    scale it rather than fail for a missing table.
    """
    if case.full_tier or case.external:
        return []
    out = []
    for parent_id in case.after:
        parent = by_id[parent_id]
        if not parent.full_tier or parent_id in ran:
            continue
        if parent_id not in REDUCED:
            raise KeyError(f"{case.id} is after FULL-tier {parent_id}, which has no REDUCED entry")
        reduced = REDUCED[parent_id]
        out.append(
            replace(
                parent,
                payload={**parent.payload, **reduced.payload},
                expect=reduced.expect,
                timeout_s=min(parent.timeout_s, PREREQUISITE_TIMEOUT_S),
            )
        )
    return out
