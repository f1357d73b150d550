"""The ``jec-coffea`` command.

Each subcommand lives in its own module of :mod:`jec_coffea.commands` and is a pair of
functions, as in correctionlib's ``cli.py``: ``setup(parser)`` declares the arguments and
``run(console, args) -> int`` does the work. A module's docstring is its help text. Modules are
discovered, so adding a subcommand touches no other file. Command modules import heavy
dependencies inside ``run`` so that ``jec-coffea --help`` stays fast.

Exit status: 0 success, 1 a check failed (e.g. closure), 2 bad input (one line on stderr, no
traceback), 3 unexpected internal error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import warnings
from types import ModuleType

from rich.console import Console
from rich.logging import RichHandler

from . import __version__, commands
from .errors import JecCoffeaError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


def _command_modules() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        found[getattr(module, "NAME", info.name.replace("_", "-"))] = module
    return dict(sorted(found.items()))


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="jec-coffea", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--version", action="version", version=f"jec-coffea {__version__}"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _command_modules().items():
        doc = (module.__doc__ or "").strip()
        summary = doc.split("\n\n")[0].replace("\n", " ")
        p = sub.add_parser(
            name,
            help=summary,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.setup(p)
        p.set_defaults(_run=module.run)
    return parser


def _configure_logging(console: Console, verbose: int, quiet: bool) -> None:
    level = (
        logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    )
    handler = RichHandler(console=console, show_path=verbose > 1, show_time=False)
    logging.basicConfig(
        level=level, handlers=[handler], format="%(message)s", force=True
    )
    logging.captureWarnings(True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jec-coffea`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    console = Console(stderr=False)
    _configure_logging(Console(stderr=True), args.verbose, args.quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return int(args._run(console, args) or 0)
    except JecCoffeaError as err:
        print(f"jec-coffea {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"jec-coffea {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        logging.getLogger(__name__).exception("unexpected error in %s", args.command)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
