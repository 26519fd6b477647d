"""`python -m accrue …`: how `accrue dev` starts its worker and API with the same interpreter."""

from accrue.cli import app

app()
