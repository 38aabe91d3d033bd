"""The community's tracks and detections files (one file per video, `<video>.txt`,
comma-separated, no header): tracks `track_id,frame_id,x_min,y_min,x_max,y_max`; detections
`frame_id,x_min,y_min,x_max,y_max,score` (inclusive pixel boxes). A `readme.txt` in a folder
(the community's annotation folders ship one) is not read as a video. Readers validate every
row (plain finite decimal numbers: no 'inf', no '1_0') and name the file and line of the first
bad one; a UTF-8 byte-order mark and CRLF line endings read correctly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tvad_jax.data.files import parse_number, text_lines
from tvad_jax.errors import EvalInputError

TRACK_COLUMNS = ("track_id", "frame_id", "x_min", "y_min", "x_max", "y_max")
DETECTION_COLUMNS = ("frame_id", "x_min", "y_min", "x_max", "y_max", "score")
_MAX_INT = 2.0 ** 53   # ids above this are not exact as the float64 they are parsed into


def read_tracks_file(path: str | Path, num_frames: int | None = None) -> np.ndarray:
    """Validated rows [R, 6] of one tracks file (frame ids below `num_frames` when given)."""
    path = Path(path)
    rows, lines = _read_rows(path, TRACK_COLUMNS)
    _check_integral(path, rows, lines, (0, 1), TRACK_COLUMNS)
    _check_frames(path, rows[:, 1], lines, num_frames)
    _check_boxes(path, rows[:, 2:6], lines)
    key = rows[:, :2]
    order = np.lexsort((key[:, 1], key[:, 0]))
    same = np.flatnonzero(np.all(key[order][1:] == key[order][:-1], axis=1))
    if len(same):
        first, second = sorted(lines[order[same[0]:same[0] + 2]])
        raise EvalInputError(f"{path}:{second}: track {int(rows[order[same[0]], 0])} already has "
                             f"a region in frame {int(rows[order[same[0]], 1])} (line {first})")
    return rows


def read_detections_file(path: str | Path, num_frames: int | None = None) -> np.ndarray:
    """Validated rows [K, 6] of one detections file (frame ids below `num_frames` when
    given)."""
    path = Path(path)
    rows, lines = _read_rows(path, DETECTION_COLUMNS)
    _check_integral(path, rows, lines, (0,), DETECTION_COLUMNS)
    _check_frames(path, rows[:, 0], lines, num_frames)
    _check_boxes(path, rows[:, 1:5], lines)
    return rows


def write_detections(path: str | Path, rows: np.ndarray) -> Path:
    """Write detections rows [K, 6] (frame, x_min, y_min, x_max, y_max, score) to a file."""
    return _write_rows(Path(path), rows, "%d,%.10g,%.10g,%.10g,%.10g,%.10g")


def write_tracks(path: str | Path, rows: np.ndarray) -> Path:
    """Write tracks rows [R, 6] (track, frame, x_min, y_min, x_max, y_max) to a file."""
    return _write_rows(Path(path), rows, "%d,%d,%.10g,%.10g,%.10g,%.10g")


def _write_rows(path: Path, rows: np.ndarray, fmt: str) -> Path:
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    path.write_text("".join(fmt % tuple(r) + "\n" for r in rows))
    return path


def txt_files(directory: Path) -> list[Path]:
    """The `<video>.txt` files of a folder, sorted by name."""
    if not directory.is_dir():
        raise EvalInputError(f"{directory}: not a folder")
    paths = [p for p in sorted(directory.glob("*.txt")) if p.stem.lower() != "readme"]
    if not paths:
        raise EvalInputError(f"{directory}: no <video>.txt files")
    return paths


def _read_rows(path: Path, columns: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(values [N, C], 1-based line numbers [N]) of a comma-separated file of finite plain
    decimal numbers; blank lines skipped."""
    values, lines = [], []
    for number, line in text_lines(path):
        parts = line.split(",")
        if len(parts) != len(columns):
            raise EvalInputError(f"{path}:{number}: expected {len(columns)} comma-separated "
                                 f"values ({','.join(columns)}), got {len(parts)}: {line!r}")
        try:
            values.append([parse_number(p) for p in parts])
        except ValueError:
            raise EvalInputError(f"{path}:{number}: not a finite number in {line!r} "
                                 f"(expected {','.join(columns)})") from None
        lines.append(number)
    return np.array(values, dtype=np.float64).reshape(-1, len(columns)), np.array(lines, np.int64)


def _check_frames(path: Path, frames: np.ndarray, lines: np.ndarray,
                  num_frames: int | None) -> None:
    """Frame ids lie inside a video (or all videos) of `num_frames` frames, when given."""
    bad = np.flatnonzero(frames >= num_frames) if num_frames is not None else []
    if len(bad):
        raise EvalInputError(f"{path}:{lines[bad[0]]}: frame_id {int(frames[bad[0]])} beyond "
                             f"the {num_frames} frames")


def _check_integral(path: Path, rows: np.ndarray, lines: np.ndarray, cols: tuple[int, ...],
                    names: tuple[str, ...]) -> None:
    for col in cols:
        bad = np.flatnonzero((rows[:, col] != np.round(rows[:, col])) | (rows[:, col] < 0)
                             | (rows[:, col] >= _MAX_INT))
        if len(bad):
            raise EvalInputError(f"{path}:{lines[bad[0]]}: {names[col]} must be a non-negative "
                                 f"integer below 2^53, got {rows[bad[0], col]}")


def _check_boxes(path: Path, boxes: np.ndarray, lines: np.ndarray) -> None:
    bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if len(bad):
        raise EvalInputError(f"{path}:{lines[bad[0]]}: box has x_max < x_min or y_max < y_min: "
                             f"{boxes[bad[0]].tolist()}")
