"""`python -m noetl.cli`: the `noetl` command."""

from noetl.cli import main

main()
