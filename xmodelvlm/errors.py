"""User-fixable errors and the CLI wrapper that turns them into one line and exit code 2.

Anything a user can fix (a missing file, a bad flag, a corrupt image, a malformed JSON line) raises
`UserError` with a message that names the thing and how to fix it. Command-line entry points wrap their
`main` in `run_cli`, which prints `error: <message>` to stderr and exits 2 without a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user can fix; its message is shown as is, on one line."""


def fail(message: str) -> NoReturn:
    raise UserError(message)


def report_and_exit(message: str) -> NoReturn:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


def run_cli(main: Callable[..., object], *args, **kwargs) -> object:
    """Run a CLI main; a `UserError` becomes one stderr line and exit 2, Ctrl-C exits 130."""
    try:
        return main(*args, **kwargs)
    except UserError as exc:
        report_and_exit(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130)


class ArgumentParser(__import__("argparse").ArgumentParser):
    """argparse, but a bad flag prints one line (`error: ...` plus the fix) and exits 2, like every user error.
    Abbreviated flags are refused: `--temperatur` must not silently mean `--temperature`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        report_and_exit(f"{self.prog}: {message} (see --help)")
