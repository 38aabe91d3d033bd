"""Strict edge readers: text, numbers, JSON, .npy, numbered files; and a seeded fuzz run of
mutated tracks files, sidecars and .npy files that must end in a named error or a valid read."""
import io
import json
import re

import numpy as np
import pytest

from tvad_jax.data import track_files
from tvad_jax.data.files import (check_output_dir, load_npy, numbered_files, parse_int,
                                 parse_number, read_json, read_text)
from tvad_jax.data.readers import UBnormalReader, check_sidecar
from tvad_jax.errors import DataError, InputError


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


# ------------------------------------------------------------------ fuzz
TRACKS = "0,154,4,142,119,249\n0,155,6,145,129,254\n1,160,10,10,20,30\n"
SIDECAR = {"video": "abnormal_scene_1_scenario_1", "scene": 1, "split": "test", "seed": [3],
           "num_frames": 20, "height": 32, "width": 48, "fps": 30, "nuisances": {},
           "objects": [{"id": 5, "class": "person",
                        "attributes": {"top": "red", "bottom": "blue", "bag": None},
                        "anomaly_type": "running", "anomaly": [2, 4],
                        "timeline": [{"start": 0, "end": 19, "label": "walking"}],
                        "boxes": [[2, 30, 20, 35, 25], [3, 31.5, 20, 36, 25]]}]}
TOKENS = [b"inf", b"nan", b"1e400", b"1_0", b"-1", b"", b" ", b"\x00", b"\xff", b"\r\n",
          b"\xef\xbb\xbf", b"0x1", b"\xd9\xa1", b"null", b"true", b"[]", b"{}", b'"x"', b"1e308",
          b"0.5", b",", b"\n"]


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random edit: flip, insert, delete, truncate, duplicate a line, or splice a token."""
    data = bytearray(data)
    kind = rng.integers(6)
    at = int(rng.integers(len(data) + 1))
    if kind == 0 and data:
        data[min(at, len(data) - 1)] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        data[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 4)), dtype=np.uint8))
    elif kind == 2:
        del data[at:at + int(rng.integers(1, 6))]
    elif kind == 3:
        del data[at:]
    elif kind == 4:
        lines = bytes(data).splitlines(keepends=True)
        if lines:
            line = lines[int(rng.integers(len(lines)))]
            data[at:at] = line
    else:
        end = at + int(rng.integers(0, 4))
        data[at:end] = TOKENS[int(rng.integers(len(TOKENS)))]
    return bytes(data)


def _fuzz_cases(seed: int, base: bytes, count: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        data = base
        for _ in range(int(rng.integers(1, 4))):
            data = _mutate(data, rng)
        yield data


def _check_tracks(path):
    rows = track_files.read_tracks_file(path)
    assert rows.shape[1] == 6 and np.isfinite(rows).all()
    assert (rows[:, :2] == np.round(rows[:, :2])).all() and (rows[:, :2] >= 0).all()
    assert (rows[:, 4] >= rows[:, 2]).all() and (rows[:, 5] >= rows[:, 3]).all()
    lines = [line for line in path.read_bytes().decode("utf-8-sig").splitlines() if line.strip()]
    assert len(rows) == len(lines)


def _check_sidecar(path):
    sidecar = UBnormalReader(path.parent.parent).read_sidecar(SIDECAR["video"])
    check_sidecar(path, json.loads(json.dumps(sidecar)), SIDECAR["video"])


def _check_npy(path):
    array = load_npy(path)
    assert array.size and array.dtype.kind in "biuf"


@pytest.mark.parametrize("kind", ["tracks", "sidecar", "npy"])
def test_fuzz_mutated_files_give_named_errors_or_valid_reads(tmp_path, kind):
    """1,000 seeded mutations per format (about 4 s in all); raise `count` for a longer run."""
    count = 1000
    scene = tmp_path / "Scene1"
    scene.mkdir()
    path, base, check = {
        "tracks": (tmp_path / "t.txt", TRACKS.encode(), _check_tracks),
        "sidecar": (scene / f"{SIDECAR['video']}.json", json.dumps(SIDECAR).encode(),
                    _check_sidecar),
        "npy": (tmp_path / "x.npy", _npy_bytes(np.array([0, 1, 1, 0], np.uint8)), _check_npy),
    }[kind]
    outcomes = {"error": 0, "read": 0}
    for data in _fuzz_cases({"tracks": 0, "sidecar": 1, "npy": 2}[kind], base, count):
        path.write_bytes(data)
        try:
            check(path)
        except InputError as err:
            assert str(path) in str(err) and "\n" not in str(err)
            outcomes["error"] += 1
        else:
            outcomes["read"] += 1
    assert outcomes["error"] > 0 and outcomes["read"] > 0


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
