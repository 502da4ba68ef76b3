"""Errors a user can fix, and how the command-line entry points report them.

An entry point's ``main`` raises; its ``__main__`` block goes through :func:`exit_code`, which prints such an
error as one line ``error: ...`` on stderr (no traceback) and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence, Tuple, Type

from .data.validation import DataValidationError


class InputFileError(ValueError):
    """A file or folder the user gave is unreadable or unusable; the message starts with its path (or, for a
    config value, with the expid and key)."""


USER_ERRORS: Tuple[Type[BaseException], ...] = (InputFileError, DataValidationError, FileNotFoundError)


def exit_code(main: Callable[[Optional[Sequence[str]]], object], argv: Optional[Sequence[str]] = None,
              extra: Tuple[Type[BaseException], ...] = ()) -> int:
    """Run ``main(argv)``; 2 after printing ``error: <message>`` for a user error, else ``main``'s int or 0."""
    try:
        result = main(argv)
    except USER_ERRORS + extra as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


class CommandLineParser(argparse.ArgumentParser):
    """``argparse`` with the entry points' error format: a bad option or a missing argument is one line
    ``error: ...`` on stderr (with where to read the usage) and exit status 2, not the usage block first."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (usage: {self.prog} --help)\n")
