"""`python -m tamer.cli`: the same command as the `tamer` console script."""

from tamer.cli import app

app()
