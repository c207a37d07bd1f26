"""``rnnparity`` entry point: argparse subcommands, one module each."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NoReturn, Sequence

from .. import __version__
from ..errors import (
    FormatError,
    InputError,
    LayoutError,
    MissingFrameworkError,
    RnnParityError,
    ShapeError,
    UnsupportedFeatureError,
)
from .common import EXIT_CODE_HELP, ExitCode, UsageError, emit_json

__all__ = ["main", "build_parser"]

# Each module defines NAME, HELP, add_arguments(parser) and execute(args) -> int.
COMMAND_MODULES = ["run", "inspect", "verify", "convert", "diagnose", "bench"]

_EXIT_FOR_ERROR = [
    (UsageError, ExitCode.USAGE),
    (UnsupportedFeatureError, ExitCode.UNSUPPORTED),
    (MissingFrameworkError, ExitCode.FRAMEWORK_MISSING),
    ((ShapeError, LayoutError, FormatError, InputError), ExitCode.BAD_INPUT),
    (RnnParityError, ExitCode.BAD_INPUT),
]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr like every other error."""

    def error(self, message: str) -> NoReturn:
        where = "" if self.prog == "rnnparity" else f"{self.prog}: "
        self.exit(ExitCode.USAGE, f"rnnparity: error: {where}{message} (see "
                                  f"{self.prog} --help)\n")


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    # Accepted before and after the command; the command's copy must not reset the
    # value given before it, hence SUPPRESS below the top level.
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="count", default=default(0),
                        help="log the conventions applied (-vv for debug detail)")
    parser.add_argument("-q", "--quiet", action="store_true", default=default(False),
                        help="log errors only")
    parser.add_argument("--debug", action="store_true", default=default(False),
                        help="show tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rnnparity",
        description=(
            "Run recurrent layers (LSTM, GRU, simple RNN) trained in Keras/TensorFlow, "
            "PyTorch or ONNX in plain NumPy, with the framework's exact numbers."
        ),
        epilog=EXIT_CODE_HELP,
    )
    parser.add_argument("--version", action="version", version=f"rnnparity {__version__}")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        command = sub.add_parser(
            module.NAME, help=module.HELP, description=module.DESCRIPTION,
            epilog=getattr(module, "EXAMPLES", "") + "\n\n" + EXIT_CODE_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.add_argument("--json", action="store_true",
                             help="print one JSON object (schema_version, command, exit_code, "
                             "result or error)")
        _global_options(command, top=False)
        command.set_defaults(_module=module)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[
        min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (see ``rnnparity --help``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    _configure_logging(args.verbose, args.quiet)
    # TensorFlow (verify, convert, bench) prints C++ start-up chatter otherwise.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    try:
        return int(args._module.execute(args))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`rnnparity ... | head`): nothing left to say.
        sys.stdout = None  # type: ignore[assignment]
        return ExitCode.OK
    except RnnParityError as err:
        if args.debug:
            raise
        code = next(code for kind, code in _EXIT_FOR_ERROR if isinstance(err, kind))
        if getattr(args, "json", False):
            emit_json(args.command, code, error={"type": type(err).__name__,
                                                  "message": str(err), "hint": err.hint})
        else:
            print(f"rnnparity: error: {_one_line(str(err))}", file=sys.stderr)
        return code
    except Exception as err:  # a bug: still one line and an exit code, unless --debug
        if args.debug:
            raise
        message = (f"internal error: {type(err).__name__}: {_one_line(str(err))} (please "
                   "report it; --debug shows the traceback)")
        if getattr(args, "json", False):
            emit_json(args.command, ExitCode.INTERNAL, error={
                "type": type(err).__name__, "message": message, "hint": None})
        else:
            print(f"rnnparity: error: {message}", file=sys.stderr)
        return ExitCode.INTERNAL


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


if __name__ == "__main__":
    sys.exit(main())
