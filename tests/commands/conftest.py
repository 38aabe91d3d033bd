"""Fixtures of the CLI tests: run `tvad ...` in this process and read what it printed."""
from __future__ import annotations

import dataclasses

import pytest

from tvad_jax.cli import main


@dataclasses.dataclass
class Result:
    """Exit code and captured output of one `tvad` command."""

    code: int
    out: str
    err: str

    def failed_with(self, *fragments: str) -> str:
        """Assert the command failed as bad input should (exit 2, nothing on stdout, exactly
        one `tvad: error:` line on stderr holding every fragment) and return that line."""
        assert self.code == 2, (self.code, self.err)
        assert self.out == ""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got:\n{self.err}"
        line, = lines
        assert line.startswith("tvad: error: "), line
        for fragment in fragments:
            assert fragment in line, (fragment, line)
        return line


@pytest.fixture
def tvad(capsys):
    """`tvad(*argv) -> Result`: runs `tvad_jax.cli.main` on the arguments (str()-ed)."""

    def run(*argv) -> Result:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture
def tvad_help(capsys):
    """`tvad_help(*argv) -> str`: the help text of `tvad *argv --help` (argparse exits 0)."""

    def run(*argv) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main([*map(str, argv), "--help"])
        assert exit_info.value.code == 0
        out, err = capsys.readouterr()
        assert err == ""
        return out

    return run


@pytest.fixture
def runs_dir(tmp_path):
    """An empty folder for `runs_dir=` / `--runs-root`; tests check that it stays empty
    (`list(runs_dir.rglob("*")) == []`)."""
    path = tmp_path / "runs"
    path.mkdir()
    return path
