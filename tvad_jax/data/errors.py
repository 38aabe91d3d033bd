"""Errors for bad input: they always name the offending file and the problem."""
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
