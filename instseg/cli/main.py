"""``instseg`` entry point: a thin argparse layer over the public Python functions.

Each command lives in its own module ``instseg/cli/<name>.py`` with ``add_arguments(parser)``
and ``run(args) -> int``; modules import only argparse at top level so ``--help`` and light
commands (``info``, ``convert``, ``eval``) never load torch.

Exit codes: 0 success, 1 bad input (one line on stderr), 2 wrong usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

#: command name -> module under instseg.cli (explicit; no registry magic)
COMMANDS: dict[str, str] = {
    "info": "info",
    "convert": "convert",
    "eval": "eval",
    "demo": "demo",
    "train": "train",
    "predict": "predict",
    "models": "models",
    "export": "export",
    "track": "track",
    "serve": "serve",
}


def build_parser() -> argparse.ArgumentParser:
    from instseg import __version__

    parser = argparse.ArgumentParser(prog="instseg", description="Instance segmentation toolkit.")
    parser.add_argument("--version", action="version", version=f"instseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"instseg.cli.{module_name}")
        doc = (module.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _format_warning(message, category, filename, lineno, line=None):  # type: ignore[no-untyped-def]
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used as ``sys.exit`` value by the script)."""
    from instseg.errors import InstsegError

    warnings.formatwarning = _format_warning
    args = build_parser().parse_args(argv)
    try:
        code = int(args._module.run(args) or 0)
    except InstsegError as err:
        print(f"instseg {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"instseg {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


def cli() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
