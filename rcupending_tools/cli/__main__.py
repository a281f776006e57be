"""`python -m rcupending_tools.cli`: the same entry point as the `rcupending` command."""

from .app import main

main()
