"""`python -m pipelines.cli` is `civicflow`."""

from pipelines.cli import app

app()
