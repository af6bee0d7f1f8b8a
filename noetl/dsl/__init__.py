"""The playbook language: YAML → typed, immutable playbook model, and templates."""

from noetl.dsl.model import Arc, Loop, Next, Playbook, Step, Tool
from noetl.dsl.parse import parse_playbook

__all__ = ["Arc", "Loop", "Next", "Playbook", "Step", "Tool", "parse_playbook"]
