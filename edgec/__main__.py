"""`python -m edgec ...`: the edgec command where its console script is not on the PATH."""

from edgec.cli.main import app

app()
