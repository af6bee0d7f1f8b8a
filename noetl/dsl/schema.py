"""JSON Schema of a playbook (draft 2020-12), for editors; `noetl schema` prints it.

The parser in `noetl.dsl.parse` is the authority (it also checks references between steps
and template syntax); this schema describes the shape so editors can complete and flag keys.
"""

from __future__ import annotations

from typing import Any

from noetl.dsl.parse import API_VERSIONS, POLICY_ACTIONS, TOOL_KINDS

_TEMPLATE = {"type": "string", "description": "A Jinja2 template, e.g. {{ workload.x }}"}
_MAP = {"type": "object"}

_RULE = {
    "type": "object",
    "properties": {
        "when": _TEMPLATE,
        "then": {
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
        },
        "else": {
            "type": "object",
            "properties": {"then": {"$ref": "#/$defs/rule/properties/then"}},
        },
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
                    "properties": {"mode": {"enum": ["exclusive", "inclusive"]}},
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
        "loop": {
            "type": "object",
            "properties": {
                "in": {},
                "iterator": {"type": "string"},
                "spec": {
                    "type": "object",
                    "properties": {
                        "mode": {"enum": ["sequential", "parallel"]},
                        "max_in_flight": {"type": "integer", "minimum": 1},
                    },
                    "additionalProperties": False,
                },
            },
            "required": ["in", "iterator"],
            "additionalProperties": False,
        },
    },
    "required": ["step", "tool"],
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
                "properties": {"name": {"type": "string"}, "credential": {"type": "string"}},
                "required": ["name", "credential"],
                "additionalProperties": False,
            },
        },
    }
