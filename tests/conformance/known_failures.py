"""Conformance cases that do not pass yet: case id → one-line reason (issue 9's to-do list).

Applied as strict xfail: a listed case that starts passing fails the suite until it is removed
from here. Never add a case to get green unless it was already failing.
"""

from __future__ import annotations

KNOWN_FAILURES: dict[str, str] = {
    # intent-unclear (manifest). test_fail_auth's `do: fail` fails the step; its only arc has no
    # `when`. Upstream routes it anyway: noetl/e2e scripts/rust_regression_run.sh lists the
    # fixture in its all-green core set; upstream's docs (noetl/docs reference/
    # pipeline_execution.md) evaluate a step's arcs on step.failed as on step.done; an arc without
    # `when` always matches (noetl/noetl noetl/core/dsl/engine/executor/transitions.py); and the
    # Python engine's `:task_sequence` call.done handler (executor/events.py) marks the parent step
    # completed and evaluates its arcs without reading the sequence's status, which `do: fail`
    # sets to "failed" (noetl/worker/task_sequence_executor.py). Here an unconditional arc never
    # routes a failure (DSL.md sections 4 and 6: a step that failed without a handler fails the
    # execution; docs/dsl.md, failure routing), so the run fails: a decision, not a bug.
    "pagination/pipeline/test_pipeline_error_handling.yaml": "FAILED: step 'test_fail_auth' failed: GET http://127.0.0.1/api/v1/errors returned HTTP 401: {'detail':'Unautho",
    # The reduced parent (prerequisites.py) leaves the tables; standalone (parent_execution_id '')
    # no row is selected, so normalize_batch's default arc goes straight to summarize, whose input
    # `transformed: '{{ transform_http_results }}'` names a step that did not run. Here that is an
    # undefined name in a tool input, which fails the step (DSL.md §2, a decision; it is rendered,
    # not only tested, so §2's falsy-when-tested rule does not cover it). Upstream's
    # render_template (noetl/noetl noetl/core/dsl/render.py, strict_keys=False) returns the
    # unrendered text on an undefined name, and the code's isinstance(transformed, dict) check
    # then counts 0: that leniency is what the fixture relies on.
    "batch_execution/traveler_batch_enrichment_chunk_worker/traveler_batch_enrichment_chunk_worker.yaml": "FAILED: step 'summarize' failed: template error: 'transform_http_results' is undefined",
}

# Upstream fixtures that `noetl validate` / registration do not accept yet: file → the first
# problem. Every fixture must be accepted except the ones meant to be broken (BROKEN_ON_PURPOSE).
NOT_ACCEPTED_YET: dict[str, str] = {}

# Meant to be rejected: file → a substring the rejection must contain.
BROKEN_ON_PURPOSE: dict[str, str] = {
    "broken_playbooks/should_error_tool_is_required.yaml": "command",
    # Go-template text in shell commands is not valid Jinja; the manifest header allows rejecting it.
    "deployment/deploy_gateway_kind.yaml": "template syntax error",
}
