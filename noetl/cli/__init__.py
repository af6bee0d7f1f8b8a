"""The `noetl` command."""

import sys

# httpx's package imports its own command-line client (`httpx.main`: click, pygments, rich's
# syntax, tables and progress bars), ~30 ms of every `noetl` start, unless that module cannot
# be imported; noetl never runs it. Marked as absent before httpx is first imported, httpx
# puts its stub `main` in its place (an httpx imported earlier is left as it is).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
