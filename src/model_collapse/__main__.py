"""``python -m model_collapse`` is the ``model-collapse`` command."""

from .cli import app

app(prog_name="model-collapse")
