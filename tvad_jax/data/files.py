"""Strict reading of the small files at the data layer's edges: text, numbers in text, JSON,
`.npy` arrays and numbered file sequences; the check of an output folder before any work, and
the lock that lets one process at a time fill a cache other processes share.

Every violation is a `DataError` naming the file (and line or frame) and what was expected,
so that bad input never reaches the readers as a traceback or as quietly wrong data. A UTF-8
byte-order mark and CRLF line endings are legitimate variants and read correctly.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tokenize
from pathlib import Path
from typing import Iterator

import numpy as np

from tvad_jax.errors import DataError

# A plain decimal number: no underscores ('1_0'), no 'inf' or 'nan' words, no hex.
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_NUMERIC_KINDS = "biuf"   # bool, signed, unsigned, float


def read_text(path: str | Path) -> str:
    """The UTF-8 text of `path` (a leading byte-order mark dropped); binary is an error."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read ({err.strerror or err})") from None
    if b"\0" in data:
        raise DataError(path, "binary file, expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text (byte {err.start})") from None


def text_lines(path: str | Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped line) of every non-blank line of a text file."""
    lines = read_text(path).splitlines()
    return [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]


def parse_number(text: str) -> float:
    """A finite float from a plain decimal number; ValueError for anything else."""
    text = text.strip()
    value = float(text) if _NUMBER.fullmatch(text) else None
    if value is None or not np.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def parse_int(text: str) -> int:
    """A non-negative integer written as digits (or as a float with an integral value)."""
    value = parse_number(text)
    if value != int(value) or value < 0:
        raise ValueError(f"not a non-negative integer: {text!r}")
    return int(value)


def read_json(path: str | Path):
    """The parsed JSON of a file (strict: no NaN or Infinity)."""
    path = Path(path)
    try:
        return json.loads(read_text(path), parse_float=_finite_float,
                          parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        raise DataError(path, f"not valid JSON ({err or 'nested too deeply'})") from None


def _finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(f"{text} overflows a float")
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def load_npy(path: str | Path) -> np.ndarray:
    """A numeric, non-empty `.npy` array (never unpickled); DataError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing file")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError, MemoryError) as err:
        # a damaged header fails in numpy's literal parser (SyntaxError, TokenError)
        raise DataError(path, f"not a readable .npy array ({err or 'empty file'})") from None
    if not isinstance(array, np.ndarray):
        raise DataError(path, "expected one .npy array, got an .npz archive")
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise DataError(path, f"expected numbers, got dtype {array.dtype}")
    if array.size == 0:
        raise DataError(path, f"empty array of shape {array.shape}")
    return array


def numbered_files(folder: str | Path, pattern: re.Pattern, count: int | None = None,
                   what: str = "file") -> list[Path]:
    """The files of `folder` whose names fully match `pattern` (one group: the number),
    ordered by that number, which must run 0, 1, ... without gaps (and to `count` - 1)."""
    folder = Path(folder)
    numbered = {}
    for path in folder.iterdir():
        match = pattern.fullmatch(path.name)
        if match is None:
            continue
        number = int(match.group(1))
        if number in numbered:
            raise DataError(path, f"a second {what} for frame {number} "
                                  f"(also {numbered[number].name})")
        numbered[number] = path
    expected = len(numbered) if count is None else count
    missing = sorted(set(range(expected)) - set(numbered))
    extra = sorted(set(numbered) - set(range(expected)))
    if missing:
        raise DataError(folder, f"no {what} for frame {missing[0]}: {len(numbered)} found, "
                                f"expected frames 0-{expected - 1}")
    if extra:
        raise DataError(numbered[extra[0]], f"{what} for frame {extra[0]}, beyond the "
                                            f"expected frames 0-{expected - 1}")
    return [numbered[n] for n in range(expected)]


def check_output_dir(path: str | Path) -> Path:
    """`path` if outputs can go there: it, or its nearest existing parent, is a writable
    folder. Called before any work, so that a bad output path fails at once and leaves
    nothing behind (a folder is only created later, by whoever writes into it)."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())
    if not existing.is_dir():
        where = "" if existing == path else f", so {path} cannot be made"
        raise DataError(existing, f"exists and is not a folder{where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(existing, "folder is not writable")
    return path


@contextlib.contextmanager
def waiting_lock(path: str | Path) -> Iterator[None]:
    """Hold the exclusive lock of the file `path` (made if missing) for the block, waiting
    for any other process that holds it; the OS drops a lock whose process dies, so a killed
    run never leaves one behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def write_text_atomic(path: str | Path, text: str) -> Path:
    """`text` into `path` under a temporary name of this process, then renamed: readers see
    the whole new file or the old one, never a half-written one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """`np.save` under a temporary name, then renamed: the file appears complete or not at
    all (a killed run leaves no truncated `.npy` that a later read would take)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("wb") as out:
            np.save(out, array, allow_pickle=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
