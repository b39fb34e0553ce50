"""What every CLI command shares: user mistakes become one-line errors, never tracebacks (stdlib + typer)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import TypeVar

import typer

from kdc.errors import KdcError, ListedWarning

Command = TypeVar("Command", bound=Callable[..., object])
#: Modules an extra brings, and the extra to install for them.
EXTRAS = {"torch": "train", "onnx": "train", "onnxscript": "train", "h5py": "train", "nibabel": "train",
          "matplotlib": "train", "onnxruntime": "runtime", "openvino": "runtime", "fastapi": "serve", "uvicorn": "serve",
          "pydicom": "reconstruct", "isal": "reconstruct"}


def user_errors(command: Command) -> Command:
    """Wrap a command so that :class:`KdcError`, a missing optional dependency and an operating-system failure
    (a full disk, a file that cannot be written) exit 1 with one line; a :class:`ListedWarning` is not shown twice.
    """

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ListedWarning)  # the command prints these lines itself
                return command(*args, **kwargs)
        except KdcError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None
        except ModuleNotFoundError as err:
            top = (err.name or "").split(".")[0]
            if top not in EXTRAS:
                raise
            typer.echo(f"error: this command needs {top}: pip install 'kdc[{EXTRAS[top]}]'", err=True)
            raise typer.Exit(1) from None
        except OSError as err:  # writers are atomic: nothing half-written is left behind
            where = f": {err.filename}" if err.filename else ""
            typer.echo(f"error: {err.strerror or err}{where}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
