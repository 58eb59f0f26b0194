"""``python -m model_collapse`` is the ``model-collapse`` command."""

from .cli import main

main()
