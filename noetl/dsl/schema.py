"""JSON Schema of a playbook (draft 2020-12), for editors; `noetl schema` prints it.

The parser in `noetl.dsl.parse` is the authority (it also checks references between steps
and template syntax); this schema describes the shape so editors can complete and flag keys.
"""

from __future__ import annotations

from typing import Any

from noetl.dsl.parse import (
    API_VERSIONS,
    LOOP_EXEC,
    LOOP_MODES,
    NO_MATCH,
    POLICY_ACTIONS,
)
from noetl.dsl.tool_schema import KEYCHAIN_KINDS, SCOPES, TOOL_KINDS

_TEMPLATE = {"type": "string", "description": "A Jinja2 template, e.g. {{ workload.x }}"}
_MAP = {"type": "object"}

_THEN = {
    "type": "object",
    "properties": {
        "do": {"enum": sorted(POLICY_ACTIONS)},
        "attempts": {"type": "integer", "minimum": 1},
        "delay": {"type": "number", "minimum": 0},
        "backoff": {"enum": ["none", "fixed", "linear", "exponential"]},
        "to": {"type": "string", "description": "pipeline item label for `jump`"},
        "set": _MAP,
    },
    "required": ["do"],
}

_RULE = {
    "type": "object",
    "properties": {
        "when": _TEMPLATE,
        "then": _THEN,
        "else": {
            "description": "`{then: ...}`, the shorthand `{do: ...}`, or empty with `then` beside",
            "oneOf": [
                {"type": "null"},
                {"type": "object", "properties": {"then": _THEN}, "required": ["then"]},
                _THEN,
            ],
        },
    },
    "additionalProperties": False,
}

_ADMIT_RULE = {
    "type": "object",
    "properties": {
        "when": _TEMPLATE,
        "then": {"type": "object", "properties": {"allow": {"type": ["boolean", "string"]}}},
        "else": {"type": ["object", "null"]},
    },
    "additionalProperties": False,
}

_TOOL = {
    "type": "object",
    "properties": {
        "kind": {"enum": sorted(TOOL_KINDS)},
        "name": {"type": "string", "description": "pipeline item label, or the workbook entry"},
        "input": _MAP,
        "auth": {"type": ["string", "object"], "description": "a credential name"},
        "set": _MAP,
        "spec": {
            "type": "object",
            "description": "policy, timeout, retry; other keys are tool fields (upstream v10)",
            "properties": {
                "policy": {
                    "type": "object",
                    "properties": {"rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}}},
                    "additionalProperties": False,
                }
            },
        },
    },
    "required": ["kind"],
    "additionalProperties": True,
}

_ARC = {
    "type": "object",
    "properties": {"step": {"type": "string"}, "when": _TEMPLATE, "set": _MAP},
    "required": ["step"],
    "additionalProperties": False,
}

_NEXT = {
    "oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"oneOf": [{"type": "string"}, {"$ref": "#/$defs/arc"}]}},
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "mode": {"enum": ["exclusive", "inclusive"]},
                        "on_no_match": {"enum": list(NO_MATCH)},
                    },
                    "additionalProperties": False,
                },
                "arcs": {"type": "array", "items": {"$ref": "#/$defs/arc"}},
            },
            "additionalProperties": False,
        },
    ]
}

_STEP = {
    "type": "object",
    "properties": {
        "step": {"type": "string"},
        "desc": {"type": "string"},
        "description": {"type": "string"},
        "tool": {
            "oneOf": [
                {"$ref": "#/$defs/tool"},
                {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/tool"}},
            ]
        },
        "input": _MAP,
        "args": _MAP,
        "set": _MAP,
        "next": {"$ref": "#/$defs/next"},
        "spec": {
            "type": "object",
            "properties": {
                "policy": {
                    "type": "object",
                    "properties": {
                        "admit": {
                            "type": "object",
                            "properties": {
                                "mode": {"const": "exclusive"},
                                "rules": {"type": "array", "items": _ADMIT_RULE},
                            },
                            "additionalProperties": False,
                        }
                    },
                    "additionalProperties": False,
                }
            },
            "additionalProperties": False,
        },
        "output": {
            "type": "object",
            "properties": {
                "select": {"type": "array", "items": {"type": "string"}},
                "output_select": {"type": "array", "items": {"type": "string"}},
                "store": {"type": ["object", "string"]},
                "inline_max_bytes": {"type": "integer", "minimum": 0},
            },
            "additionalProperties": False,
        },
        "loop": {
            "type": "object",
            "properties": {
                "in": {},
                "cursor": _MAP,
                "iterator": {"type": "string"},
                "spec": {
                    "type": "object",
                    "properties": {
                        "mode": {"enum": list(LOOP_MODES)},
                        "max_in_flight": {"oneOf": [{"type": "integer", "minimum": 1}, _TEMPLATE]},
                        "policy": {
                            "type": "object",
                            "properties": {"exec": {"enum": sorted(LOOP_EXEC)}, "results": _MAP},
                            "additionalProperties": False,
                        },
                        "frame": _MAP,
                    },
                    "additionalProperties": False,
                },
            },
            "required": ["iterator"],
            "additionalProperties": False,
        },
    },
    "required": ["step"],
    "additionalProperties": False,
}


def playbook_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://noetl.io/schemas/playbook-v2.json",
        "title": "NoETL playbook (noetl.io/v2)",
        "type": "object",
        "properties": {
            "apiVersion": {"enum": sorted(API_VERSIONS)},
            "kind": {"const": "Playbook"},
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "path": {"type": "string"},
                    "description": {"type": "string"},
                    "version": {"type": ["string", "number"]},
                    "labels": _MAP,
                    "tags": {"type": "array"},
                    "exposes_as_mcp": {"description": "accepted, no effect here"},
                },
                "required": ["name"],
                "additionalProperties": False,
            },
            "workload": _MAP,
            "keychain": {"type": "array", "items": {"$ref": "#/$defs/keychain"}},
            "workbook": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "desc": {"type": "string"},
                        "description": {"type": "string"},
                        "tool": {"$ref": "#/$defs/tool"},
                        "assert": _MAP,
                    },
                    "required": ["name", "tool"],
                    "additionalProperties": False,
                },
            },
            "workflow": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"}},
            "executor": _MAP,
            "spec": {"type": "object", "description": "upstream root spec: `{{ spec.x }}`"},
            "tracing": {"type": "object", "description": "accepted, no effect here"},
        },
        "required": ["apiVersion", "kind", "metadata", "workflow"],
        "additionalProperties": False,
        "$defs": {
            "step": _STEP,
            "tool": _TOOL,
            "arc": _ARC,
            "next": _NEXT,
            "rule": _RULE,
            "keychain": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "kind": {"enum": sorted(KEYCHAIN_KINDS)},
                    "scope": {"enum": sorted(SCOPES)},
                    "auto_renew": {"type": ["boolean", "string"]},
                    "credential": {"type": "string"},
                    "map": {"type": ["object", "string"]},
                },
                "required": ["name"],
            },
        },
    }
