"""The project's own errors: a user's mistake or an input that cannot be used, never a bug.

Everything a user can cause derives from ``DegtransError``; the CLI prints such an error as one line
and catches nothing else, so a bug (a plain ``ValueError``, ``KeyError``...) keeps its traceback.
"""

from __future__ import annotations


class DegtransError(Exception):
    """A failure the user can act on: bad input, a rejected photograph, a config that does not fit."""


class InputError(DegtransError, ValueError):
    """An input file, flag or argument that cannot be used; the message names it and the problem."""


class MissingInput(InputError, FileNotFoundError):
    """An input file or directory that does not exist (a ``FileNotFoundError`` too)."""
