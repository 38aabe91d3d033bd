"""Errors for bad input: they always name the offending file (and line) and the problem.

One module below every layer so that data readers, checkpoint loaders and evaluation share
one base class that the CLI turns into a one-line message."""
from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Base of every bad-input error (data files, evaluation files); the message names the
    file (and line where there is one)."""


class DataError(InputError):
    """Bad or missing input data; `path` names the file, `problem` says what is wrong."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class EvalInputError(InputError):
    """Evaluation input that cannot be scored; the message names the file (and line) at fault."""
