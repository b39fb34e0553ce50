"""The ``kdc`` command: one subcommand per stage (data, train/distill/evaluate, export, bench/serve/reconstruct,
pretrained)."""

from __future__ import annotations

import typer

from kdc._cli import user_errors
from kdc.compress import cli as compress_cli
from kdc.data.cli import data_app
from kdc.export import cli as export_cli
from kdc.pretrained.cli import pretrained
from kdc.runtime import cli as runtime_cli

app = typer.Typer(
    help="Distil MRI reconstruction networks (KD-MRI) and ship them without PyTorch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: it wraps long option names instead of truncating them at 80 columns
)
for name, command in {
    "train": compress_cli.train,
    "distill": compress_cli.distill,
    "evaluate": compress_cli.evaluate,
    "report": compress_cli.report,
    "export": export_cli.export,
    "bench": runtime_cli.bench,
    "serve": runtime_cli.serve,
    "mrd-client": runtime_cli.mrd_client,
    "triton-repo": runtime_cli.triton_repo,
    "reconstruct": runtime_cli.reconstruct,
    "pretrained": pretrained,
}.items():
    app.command(name)(user_errors(command))
app.add_typer(data_app, name="data", help="Build datasets of real MRI with retrospective undersampling.")
