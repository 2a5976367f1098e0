"""`python -m hybrid.cli`: the same as the `hybrid` command."""

from hybrid.cli import main

main()
