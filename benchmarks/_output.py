"""How every benchmark hands its result over: the JSON report on stdout (and in `--out` when
given), a readable table on stderr, so that `> result.json` keeps only the JSON."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def emit(report: dict, out: str | None = None, table: str | None = None) -> None:
    """Print `report` as JSON, write it to `out` (if set) and print `table` (if set) to stderr."""
    text = json.dumps(report, indent=1)
    print(text)
    if table:
        print(table, file=sys.stderr)
    if out:
        Path(out).write_text(text + "\n")
