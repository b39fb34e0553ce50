"""``python -m kdc``: the same as the ``kdc`` command."""

from kdc.cli import app

app(prog_name="kdc")
