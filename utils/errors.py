"""User-facing errors: one line, no traceback, non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the user's input (path, file content, flag).

    The message must be one line and name the file (and line, where there is one),
    e.g. ``"scores.txt:17: expected 2 columns 'utt_id score', got 3"``.
    """


def where(path: object, line: int | None = None) -> str:
    """Format a ``file:line`` prefix for error messages."""
    return f"{path}:{line}" if line is not None else f"{path}"


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main(argv)``; turn a `UserError` into ``error: ...`` on stderr and exit code 2."""
    try:
        return int(main(argv) or 0)
    except UserError as exc:
        msg = " ".join(str(exc).split("\n"))
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
