"""Strict edge readers: text, numbers, JSON, .npy, numbered files, output folders, atomic
text writes, the cache lock (the seeded fuzz of every format is tests/data/test_fuzz.py)."""
import fcntl
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tvad_jax.data.files import (check_output_dir, load_npy, numbered_files, parse_int,
                                 parse_number, read_json, read_text, save_npy, waiting_lock,
                                 write_text_atomic)
from tvad_jax.errors import DataError


def test_text_variants_and_binary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\r\n")
    assert read_text(path).splitlines() == ["one", "two"]
    path.write_bytes(b"one\x00two")
    with pytest.raises(DataError, match=r"a\.txt: binary file"):
        read_text(path)
    path.write_bytes(b"caf\xe9")
    with pytest.raises(DataError, match=r"a\.txt: not UTF-8 text \(byte 3\)"):
        read_text(path)
    with pytest.raises(DataError, match=r"b\.txt: cannot read"):
        read_text(tmp_path / "b.txt")


@pytest.mark.parametrize("text", ["1_0", "inf", "-Infinity", "nan", "1e400", "0x10", "", "1 2",
                                  "\u0661", "1,0"])
def test_numbers_are_plain_finite_decimals(text):
    with pytest.raises(ValueError):
        parse_number(text)


def test_numbers_that_read():
    assert [parse_number(t) for t in (" 5", "5.", ".5", "-2e3", "+1")] == [5, 5, .5, -2000, 1]
    assert parse_int("7.0") == 7
    for bad in ("7.5", "-1"):
        with pytest.raises(ValueError):
            parse_int(bad)


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": -Infinity}', '{"a": 1e400}', "[" * 5000,
                                  '{"a": 1'])
def test_json_is_strict(tmp_path, text):
    (tmp_path / "s.json").write_text(text)
    with pytest.raises(DataError, match=r"s\.json: not valid JSON"):
        read_json(tmp_path / "s.json")


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable .npy array"),
    (_npy_bytes(np.arange(10.0))[:-8], "not a readable .npy array"),
    (_npy_bytes(np.array([{"a": 1}], dtype=object)), "not a readable .npy array"),
    (_npy_bytes(np.array(["0.5", "x"])), "expected numbers, got dtype <U3"),
    (_npy_bytes(np.array([1 + 2j])), "expected numbers, got dtype complex128"),
    (_npy_bytes(np.zeros((3, 0))), r"empty array of shape \(3, 0\)"),
])
def test_npy_files(tmp_path, content, message):
    (tmp_path / "x.npy").write_bytes(content)
    with pytest.raises(DataError, match=rf"x\.npy: {message}"):
        load_npy(tmp_path / "x.npy")
    with pytest.raises(DataError, match=r"y\.npy: missing file"):
        load_npy(tmp_path / "y.npy")


def test_numbered_files_sort_by_number_and_refuse_gaps(tmp_path):
    pattern = re.compile(r"([0-9]+)\.jpg")
    for t in range(32):
        (tmp_path / f"{t}.jpg").touch()
    (tmp_path / "notes.txt").touch()
    assert [p.name for p in numbered_files(tmp_path, pattern)] == [f"{t}.jpg" for t in range(32)]
    with pytest.raises(DataError, match=r"30\.jpg: file for frame 30, beyond the expected "
                                        r"frames 0-29"):
        numbered_files(tmp_path, pattern, 30)
    (tmp_path / "7.jpg").unlink()
    with pytest.raises(DataError, match="no file for frame 7: 31 found, expected frames 0-30"):
        numbered_files(tmp_path, pattern)


def test_output_dir_must_be_a_writable_folder_or_creatable(tmp_path):
    """A missing folder under a writable one is fine (made later); a file, or a path below
    one, is named before any work; nothing is created by the check."""
    assert check_output_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match=f"{blocker}: exists and is not a folder$"):
        check_output_dir(blocker)
    with pytest.raises(DataError, match="not a folder, so .*/file/a/b cannot be made"):
        check_output_dir(blocker / "a" / "b")


def test_output_dir_refuses_a_read_only_folder(tmp_path, monkeypatch):
    """An unwritable folder (faked: the tests may run as root, who may write anywhere)."""
    monkeypatch.setattr("os.access", lambda path, mode: False)
    with pytest.raises(DataError, match=f"{tmp_path}: folder is not writable"):
        check_output_dir(tmp_path / "runs")


def test_save_npy_appears_complete_or_not_at_all(tmp_path, monkeypatch):
    path = save_npy(tmp_path / "a.scores.npy", np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(load_npy(path), np.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.scores.npy"]

    def fail_midway(out, array, allow_pickle):
        out.write(b"\x93NUMPY")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        save_npy(tmp_path / "b.scores.npy", np.zeros(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.scores.npy"]


def test_write_text_atomic_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    path = write_text_atomic(tmp_path / "stats.json", '{"a": 1}\n')
    write_text_atomic(path, '{"a": 2}\n')
    assert path.read_text() == '{"a": 2}\n'

    def fail_midway(self, text):
        Path.write_bytes(self, text[:3].encode())
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, '{"a": 3}\n')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]   # no temporary
    monkeypatch.undo()
    assert path.read_text() == '{"a": 2}\n'                                 # the old file


def test_waiting_lock_waits_for_its_holder_and_dies_with_it(tmp_path):
    lock = tmp_path / "cache" / ".split.lock"
    with waiting_lock(lock):
        with lock.open("w") as other, pytest.raises(BlockingIOError):   # held: a try fails
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with lock.open("w") as other:                                        # released
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # a holder killed with -9 leaves nothing held behind
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from tvad_jax.data.files import waiting_lock\n"
        "with waiting_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)"),
        str(lock)], stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    try:
        assert holder.stdout.readline().strip() == "held"
        with lock.open("w") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        holder.kill()
        holder.wait()
    with waiting_lock(lock):
        pass
