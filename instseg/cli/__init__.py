"""Command-line interface: ``instseg COMMAND ...`` (see :mod:`instseg.cli.main`)."""

from instseg.cli.main import main

__all__ = ["main"]
