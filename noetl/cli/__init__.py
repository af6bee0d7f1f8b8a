"""The `noetl` command."""

import sys

# httpx's package imports its own command-line client (`httpx.main`: click, pygments, rich's
# syntax, tables and progress bars), ~30 ms of every `noetl` start, unless that module cannot
# be imported; noetl never runs it. Marked as absent before httpx is first imported, httpx
# puts its stub `main` in its place (an httpx imported earlier is left as it is).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def main() -> None:
    """The `noetl` command. `noetl run` first starts its server's process, before this one
    loads the command line: the server's imports, most of a short run's start-up, then run on
    another core meanwhile (`noetl.embedded.server_process`)."""
    if sys.argv[1:2] == ["run"] and not {"--help", "-h"} & set(sys.argv):
        from noetl.embedded.server_process import ServerProcess

        ServerProcess.start_early()
    from noetl.cli.main import main as command

    command()
