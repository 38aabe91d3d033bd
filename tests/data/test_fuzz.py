"""Seeded fuzz of every format read at the edges: UBnormal tracks files and annotation PNGs,
sidecar JSON, videos, ShanghaiTech frame folders and `.npy` labels and pixel masks, the
community tracks and detections files, `.npy` frame scores, chat question files and config
override strings.

Every mutated input must end in the project's named error naming the input (the file, or the
config key), or in a read equal to what the input means: the unmutated input's result for a
legitimate variant (CRLF, BOM, blank lines, grey stored as equal-channel RGB, zero-padded frame
numbers, ...), and for random byte edits of a text, JSON or `.npy` file the result of the same
file restated canonically (the numbers, JSON value, lines or array it holds, written plainly;
an edit that leaves no such meaning must be refused). Any other exception, a hang or a
differing result fails.

The default run is small (`TVAD_FUZZ_CASES`, 700 cases over the formats); the longer run is
    TVAD_FUZZ_CASES=2500 .venv/bin/python -m pytest -q tests/data/test_fuzz.py
"""
import dataclasses
import io
import json
import os
import re
import shutil
import types
import typing
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from tvad_jax import config as config_lib
from tvad_jax.config import ConfigError
from tvad_jax.data.readers import ShanghaiTechReader, UBnormalReader
from tvad_jax.data.track_files import read_detections_file, read_tracks_file
from tvad_jax.data.video_io import read_video, write_video
from tvad_jax.errors import InputError
from tvad_jax.eval.metrics import read_frame_arrays
from tvad_jax.infer.dialogue import read_questions
from tvad_jax.models.tokenizer import load_tokenizer

CASES = int(os.environ.get("TVAD_FUZZ_CASES", "700"))
SEED = int(os.environ.get("TVAD_FUZZ_SEED", "0"))
pytestmark = pytest.mark.timeout(120 + CASES // 5)

T, H, W = 8, 16, 16                      # every fuzzed video: 8 frames of 16x16
NAME = "abnormal_scene_1_scenario_1"      # the UBnormal video
CLIP = "01_0001"                          # the ShanghaiTech test video
TOKENS = [b"inf", b"nan", b"1e400", b"1_0", b"-1", b"", b" ", b"\x00", b"\xff", b"\r\n",
          b"\xef\xbb\xbf", b"0x1", b"\xd9\xa1", b"null", b"true", b"[]", b"{}", b'"x"', b"1e308",
          b"0.5", b",", b"\n", b"\xc2\x85", b"\xe2\x80\xa8", b"\t", b"2.5", b"-0"]
_PLAIN = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")   # the number spec
SAME, FAIL, SAME_OR_FAIL, AS = "same", "fail", "same or fail", "as"
SHAPE_OR_FAIL = "same shape or fail"   # a bit flip in coded video data changes pixels only


@dataclasses.dataclass
class Subject:
    """One input tree under fuzz: the file most cases rewrite, the edge read of the whole
    input, and the canonical restatement of an edited file's bytes (None: it means nothing)."""

    root: Path
    path: Path
    read: Callable[[], object]
    canonical: Callable[[bytes], bytes | None] | None = None


# ------------------------------------------------------------------ outcomes
def _equal(a, b) -> bool:
    """Deep equality of read results (arrays by shape and value, dataclasses by field)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind == b.dtype.kind == "f"))
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(_equal(getattr(a, f.name), getattr(b, f.name))
                                          for f in dataclasses.fields(a))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return type(a) is type(b) and a == b


def _outcome(read, names: str):
    """('error', message) for a one-line named error whose message starts with `names` (the
    input's root) or quotes it (a config key); ('read', result) otherwise. Any other
    exception propagates: a traceback fails the test."""
    try:
        return "read", read()
    except (InputError, ConfigError) as err:
        message = str(err)
        assert message.startswith(names) or repr(names) in message, f"unnamed: {message}"
        assert "\n" not in message, f"not one line: {message!r}"
        return "error", message


def _judge(read, names: str, rule: str, restated, baseline) -> str:
    """The outcome of one mutated input, checked against what it must give under `rule`
    (AS: what `restated`, the read of its canonical restatement, gives; None: refused)."""
    kind, result = _outcome(read, names)
    if rule == AS and restated is not None:
        want_kind, want = _outcome(restated, names)
        assert kind == want_kind, f"{kind}, but its canonical form gives {want_kind}"
        assert kind == "error" or _equal(result, want), "read differs from its canonical form"
    elif rule in (FAIL, AS):
        assert kind == "error", "accepted an input that must be refused"
    else:
        assert kind == "read" or rule != SAME, f"refused a legitimate variant: {result}"
        if kind == "read" and rule == SHAPE_OR_FAIL:
            assert result.shape == baseline.shape, f"read {result.shape}, not {baseline.shape}"
            return "read" if _equal(result, baseline) else "pixels"
        assert kind == "error" or _equal(result, baseline), "silently changed result"
    return kind


def _restated(subject: Subject, canonical: bytes | None):
    """The read of the subject's file rewritten as `canonical` (None if there is none)."""
    if canonical is None:
        return None
    return lambda: (subject.path.write_bytes(canonical), subject.read())[1]


def _fuzz(tmp_path: Path, build: Callable[[Path], Subject], mutations: list, count: int,
          seed: int) -> Counter:
    """Run `count` seeded cases, each a random mutation of a fresh copy of the built input."""
    subject = build(tmp_path / "input")
    pristine = tmp_path / "pristine"
    shutil.copytree(subject.root, pristine)
    baseline = subject.read()
    rng = np.random.default_rng(seed)
    outcomes = Counter()
    for case in range(count):
        mutation = mutations[int(rng.integers(len(mutations)))]
        try:
            rule, canonical = mutation(subject, rng)
            outcomes[_judge(subject.read, str(subject.root), rule,
                            _restated(subject, canonical), baseline)] += 1
        except Exception as err:   # name the case, whatever went wrong
            data = subject.path.read_bytes()[:300] if subject.path.is_file() else b""
            raise AssertionError(f"case {case} ({mutation.__name__}, seed {seed}): "
                                 f"{type(err).__name__}: {err}; {subject.path.name} = "
                                 f"{data!r}") from err
        shutil.rmtree(subject.root)
        shutil.copytree(pristine, subject.root)
    return outcomes


# ------------------------------------------------------------------ byte-level mutations
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
            data[at:at] = lines[int(rng.integers(len(lines)))]
    else:
        data[at:at + int(rng.integers(0, 4))] = TOKENS[int(rng.integers(len(TOKENS)))]
    return bytes(data)


def _edited(data: bytes, rng: np.random.Generator) -> bytes:
    for _ in range(int(rng.integers(1, 4))):
        data = _mutate(data, rng)
    return data


def byte_edits(s: Subject, rng):
    """1-3 random edits; read as the edited bytes' canonical restatement says, or, for an
    image without one, as the original or refused."""
    data = _edited(s.path.read_bytes(), rng)
    s.path.write_bytes(data)
    return (AS, s.canonical(data)) if s.canonical else (SAME_OR_FAIL, None)


def video_edits(s: Subject, rng):
    """1-3 random edits of a video: refused, or read with its length and frame size. H.264,
    MP4 and AVI carry no checksum, so a flipped bit of coded picture data decodes, without
    any error to detect, as other pixels of that frame (counted as 'pixels')."""
    s.path.write_bytes(_edited(s.path.read_bytes(), rng))
    return SHAPE_OR_FAIL, None


def truncated(s: Subject, rng):
    data = s.path.read_bytes()
    s.path.write_bytes(data[:int(rng.integers(len(data)))])
    return (AS, s.canonical(s.path.read_bytes())) if s.canonical else (SAME_OR_FAIL, None)


def emptied(s: Subject, rng):
    s.path.write_bytes(b"")
    return (AS, s.canonical(b"")) if s.canonical else (FAIL, None)


def garbage(s: Subject, rng):
    s.path.write_bytes(bytes(rng.integers(0, 256, int(rng.integers(1, 2000)), dtype=np.uint8)))
    return (AS, s.canonical(s.path.read_bytes())) if s.canonical else (FAIL, None)


def garbage_appended(s: Subject, rng):
    with s.path.open("ab") as stream:
        stream.write(bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8)))
    return SAME_OR_FAIL, None


def replaced_by_a_folder(s: Subject, rng):
    s.path.unlink()
    s.path.mkdir()
    return FAIL, None


def _variant(transform: Callable[[bytes], bytes]):
    """A legitimate variant of the file's bytes: it must read exactly as the original."""
    def variant(s: Subject, rng):
        s.path.write_bytes(transform(s.path.read_bytes()))
        return SAME, None
    variant.__name__ = transform.__name__
    return variant


def crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def bom(data: bytes) -> bytes:
    return b"\xef\xbb\xbf" + data


def blank_lines(data: bytes) -> bytes:
    return b"\n \n" + data.replace(b"\n", b"\n\t\n") + b"\n\n"


TEXT_VARIANTS = [_variant(crlf), _variant(bom), _variant(blank_lines)]


# ------------------------------------------------------------------ canonical restatements
def _reference_text(data: bytes) -> str | None:
    """The text of UTF-8 bytes (a BOM dropped); None for binary or undecodable bytes."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _canonical_rows(width: int) -> Callable[[bytes], bytes | None]:
    """Comma-separated rows of `width` plain finite decimals restated as Python floats, one
    row a line (blank lines dropped)."""
    def canonical(data: bytes) -> bytes | None:
        text = _reference_text(data)
        if text is None:
            return None
        rows = []
        for line in filter(str.strip, text.splitlines()):
            fields = [field.strip() for field in line.split(",")]
            if len(fields) != width or not all(map(_PLAIN.fullmatch, fields)):
                return None
            if not all(np.isfinite(float(f)) for f in fields):
                return None
            rows.append(",".join(repr(float(f)) for f in fields) + "\n")
        return "".join(rows).encode()
    return canonical


def _canonical_json(data: bytes) -> bytes | None:
    """Strict JSON (no NaN or Infinity, finite floats) restated by `json.dumps`."""
    def refuse(value):
        raise ValueError(value)

    def finite(text):
        return float(text) if np.isfinite(float(text)) else refuse(text)

    text = _reference_text(data)
    try:
        return json.dumps(json.loads(text, parse_constant=refuse, parse_float=finite)).encode()
    except (TypeError, ValueError, RecursionError):
        return None


def _canonical_lines(data: bytes) -> bytes | None:
    """The stripped non-blank lines of UTF-8 text, one a line."""
    text = _reference_text(data)
    if text is None:
        return None
    return "".join(line.strip() + "\n" for line in text.splitlines() if line.strip()).encode()


def _npy_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **kwargs)
    return buffer.getvalue()


def _canonical_npy(data: bytes) -> bytes | None:
    """The array an `.npy` file holds (never unpickled), saved again plainly."""
    try:
        return _npy_bytes(np.load(io.BytesIO(data), allow_pickle=False))
    except Exception:   # noqa: BLE001  (whatever numpy refuses means nothing)
        return None


# ------------------------------------------------------------------ text row files
def _rows_subject(root: Path, text: str, read, width: int) -> Subject:
    root.mkdir()
    path = root / "rows.txt"
    path.write_text(text)
    return Subject(root, path, lambda: read(path, T), _canonical_rows(width))


def padded_fields(s: Subject, rng):
    """Spaces and tabs around every field: the same rows."""
    text = s.path.read_text()
    s.path.write_text("\n".join(" \t" + line.replace(",", " , ") + " " for line in
                                text.splitlines()) + "\n")
    return SAME, None


ROW_MUTATIONS = [byte_edits] * 8 + TEXT_VARIANTS + [padded_fields, truncated, emptied, garbage]


def community_tracks(root: Path) -> Subject:
    return _rows_subject(root, "0,2,4,3,9,12\n0,3,5,3,10,12\n1,6,0,0,15,15\n",
                         read_tracks_file, 6)


def detections(root: Path) -> Subject:
    return _rows_subject(root, "0,1,2,10,12,0.9\n3,0,0,5,5,0.25\n3,4,4,15,15,1e-3\n",
                         read_detections_file, 6)


# ------------------------------------------------------------------ UBnormal tree
def _id_maps() -> np.ndarray:
    maps = np.zeros((T, H, W), np.uint8)
    maps[2:6, 3:8, 4:9] = 3
    maps[4:7, 10:14, 9:15] = 7
    return maps


def _ubnormal_tree(root: Path) -> Path:
    """A UBnormal scene with one abnormal video's tracks file and id maps; its folder."""
    annotations = root / "Scene1" / f"{NAME}_annotations"
    annotations.mkdir(parents=True)
    for t, id_map in enumerate(_id_maps()):
        Image.fromarray(id_map).save(annotations / f"{NAME}_{t:04d}_gt.png")
    (root / "Scene1" / f"{NAME}_tracks.txt").write_text("3,2,5\n7,4,6\n")
    return root / "Scene1"


def _ground_truth(root: Path):
    return lambda: UBnormalReader(root).read_ground_truth(NAME, (T, H, W))


def ubnormal_tracks(root: Path) -> Subject:
    scene = _ubnormal_tree(root)
    return Subject(root, scene / f"{NAME}_tracks.txt", _ground_truth(root), _canonical_rows(3))


def annotation_png(root: Path) -> Subject:
    scene = _ubnormal_tree(root)
    return Subject(root, scene / f"{NAME}_annotations" / f"{NAME}_0003_gt.png",
                   _ground_truth(root))


def _png_map(s: Subject) -> np.ndarray:
    return np.asarray(Image.open(s.path))


def _saved(image: Image.Image, path: Path, **options) -> None:
    with path.open("wb") as stream:
        image.save(stream, **options)


def resaved(s: Subject, rng):
    """The same ids re-encoded (another compression level, optimized): the same read."""
    _saved(Image.fromarray(_png_map(s)), s.path, format="PNG",
           compress_level=int(rng.integers(10)), optimize=bool(rng.integers(2)))
    return SAME, None


def grey_as_rgb(s: Subject, rng):
    """The ids stored as an RGB PNG with three equal channels: the same read."""
    _saved(Image.fromarray(np.repeat(_png_map(s)[..., None], 3, axis=2)), s.path, format="PNG")
    return SAME, None


def other_mode(s: Subject, rng):
    """Ids in another mode (colour, alpha, palette, 16-bit, float, 1-bit): refused."""
    ids = _png_map(s)
    image = {0: lambda: Image.fromarray(np.dstack([ids, ids, ids + 1])),
             1: lambda: Image.fromarray(ids).convert("LA"),
             2: lambda: Image.fromarray(ids).convert("RGBA"),
             3: lambda: Image.fromarray(ids).convert("P"),
             4: lambda: Image.fromarray(ids.astype(np.uint16)),
             5: lambda: Image.fromarray(ids.astype(np.uint16) << 8),
             6: lambda: Image.fromarray(ids > 0)}[int(rng.integers(7))]()
    _saved(image, s.path, format="PNG")
    return FAIL, None


def other_size(s: Subject, rng):
    ids = _png_map(s)
    _saved(Image.fromarray(np.pad(ids, ((0, int(rng.integers(2))), (0, 1)))), s.path,
           format="PNG")
    return FAIL, None


def other_format(s: Subject, rng):
    """Another image format under the PNG's name (lossy JPEG, BMP, TIFF): refused."""
    _saved(Image.fromarray(_png_map(s)), s.path, format=["JPEG", "BMP", "TIFF"][rng.integers(3)])
    return FAIL, None


def _numbered(folder: Path, pattern: str, rng) -> tuple[int, Path]:
    """A random frame number and its file in `folder` (files named `pattern % number`)."""
    t = int(rng.integers(T))
    return t, folder / (pattern % t)


def _renamer(pattern: str, legitimate: dict[str, str], wrong: list[str]):
    """Rename one numbered file: to another spelling of its number (the same read) or to a
    name that matches no frame (a gap: refused)."""
    def renamed(s: Subject, rng):
        t, path = _numbered(s.path.parent, pattern, rng)
        names = [*legitimate.values(), *wrong]
        new = names[int(rng.integers(len(names)))]
        path.rename(path.with_name(new % t))
        return (SAME if new in legitimate.values() else FAIL), None
    return renamed


def _deleter(pattern: str):
    def deleted(s: Subject, rng):
        _numbered(s.path.parent, pattern, rng)[1].unlink()
        return FAIL, None
    return deleted


def _duplicator(pattern: str, second: str):
    """A second file for one frame number (its number spelled another way): refused."""
    def duplicated(s: Subject, rng):
        t, path = _numbered(s.path.parent, pattern, rng)
        shutil.copy(path, path.with_name(second % t))
        return FAIL, None
    return duplicated


def _stranger(names: list[str]):
    """An unrelated file beside the numbered ones: ignored."""
    def stranger(s: Subject, rng):
        (s.path.parent / names[int(rng.integers(len(names)))]).write_bytes(b"x")
        return SAME, None
    return stranger


_PNG = f"{NAME}_%04d_gt.png"
PNG_MUTATIONS = [byte_edits] * 3 + [
    truncated, emptied, garbage, replaced_by_a_folder, resaved, grey_as_rgb, other_mode,
    other_size, other_format, _deleter(_PNG), _duplicator(_PNG, f"{NAME}_%d_gt.png"),
    _renamer(_PNG, {"unpadded": f"{NAME}_%d_gt.png", "wider": f"{NAME}_%05d_gt.png"},
             [f"{NAME}_%04d_gt.PNG", f"{NAME}_%04d_gt.png.bak", f"{NAME}_%04d.png",
              "other_%04d_gt.png"]),
    _stranger(["notes.txt", ".DS_Store", f"{NAME}_gt.png"])]


# ------------------------------------------------------------------ sidecar (with its video)
def _frames(seed: int, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (T, height, width, 3), np.uint8)


def sidecar(root: Path) -> Subject:
    scene = _ubnormal_tree(root)
    write_video(scene / f"{NAME}.mp4", _frames(0))
    path = scene / f"{NAME}.json"
    path.write_text(json.dumps({
        "video": NAME, "scene": 1, "split": "test", "seed": [3], "num_frames": T, "height": H,
        "width": W, "fps": 30, "nuisances": {},
        "objects": [{"id": 3, "class": "person",
                     "attributes": {"top": "red", "bottom": "blue", "bag": None},
                     "anomaly_type": "running", "anomaly": [2, 5],
                     "timeline": [{"start": 0, "end": T - 1, "label": "walking"}],
                     "boxes": [[2, 4, 3, 8, 7], [3, 4.5, 3, 8, 7]]}]}))
    return Subject(root, path, lambda: UBnormalReader(root).read(NAME), _canonical_json)


def reformatted(s: Subject, rng):
    """The same JSON value indented, keys sorted, with surrounding white space."""
    value = json.loads(s.path.read_text())
    s.path.write_text("\n " + json.dumps(value, indent=int(rng.integers(4)), sort_keys=True)
                      + "\n\n")
    return SAME, None


JSON_MUTATIONS = [byte_edits] * 8 + TEXT_VARIANTS + [reformatted, truncated, emptied, garbage]


# ------------------------------------------------------------------ videos
def _video(suffix: str) -> Callable[[Path], Subject]:
    def build(root: Path) -> Subject:
        root.mkdir()
        path = write_video(root / f"v{suffix}", _frames(1, 32, 32))
        return Subject(root, path, lambda: read_video(path))
    build.__name__ = f"video{suffix}"
    return build


def image_renamed(s: Subject, rng):
    """A PNG or JPEG image under the video's name: refused."""
    _saved(Image.fromarray(_frames(2)[0]), s.path, format=["PNG", "JPEG"][rng.integers(2)])
    return FAIL, None


VIDEO_MUTATIONS = [video_edits, video_edits, truncated, emptied, garbage, garbage_appended,
                   image_renamed]


# ------------------------------------------------------------------ ShanghaiTech test video
def _shanghaitech_tree(root: Path) -> dict[str, Path]:
    """Frames `0.jpg`..`7.jpg`, frame labels and pixel masks of one test video."""
    testing = root / "testing"
    frames = testing / "frames" / CLIP
    frames.mkdir(parents=True)
    for t, image in enumerate(_frames(3)):
        Image.fromarray(image).save(frames / f"{t}.jpg")
    masks = np.zeros((T, H, W), np.uint8)
    masks[2:5, 4:9, 5:11] = 1
    paths = {"frames": frames / "3.jpg", "labels": testing / "test_frame_mask" / f"{CLIP}.npy",
             "masks": testing / "test_pixel_mask" / f"{CLIP}.npy"}
    for key, array in (("labels", masks.any(axis=(1, 2)).astype(np.int64)), ("masks", masks)):
        paths[key].parent.mkdir()
        np.save(paths[key], array)
    return paths


def _shanghaitech(key: str, canonical=None) -> Callable[[Path], Subject]:
    def build(root: Path) -> Subject:
        path = _shanghaitech_tree(root)[key]
        return Subject(root, path, lambda: ShanghaiTechReader(root).read(CLIP), canonical)
    build.__name__ = f"shanghaitech_{key}"
    return build


def as_png(s: Subject, rng):
    """A frame stored as PNG of its decoded pixels (under its .jpg name): the same read."""
    _saved(Image.open(s.path).convert("RGB"), s.path, format="PNG")
    return SAME, None


def resized_frame(s: Subject, rng):
    _saved(Image.fromarray(_frames(4, H, W + 2)[0]), s.path, format="JPEG")
    return FAIL, None


def frame_added(s: Subject, rng):
    """One frame more than the labels and masks: refused."""
    shutil.copy(s.path, s.path.with_name(f"{T}.jpg"))
    return FAIL, None


FRAME_MUTATIONS = [
    truncated, emptied, garbage, replaced_by_a_folder, as_png, resized_frame, frame_added,
    _deleter("%d.jpg"), _duplicator("%d.jpg", "0%d.jpg"),
    _renamer("%d.jpg", {"padded": "%03d.jpg"}, ["%d.jpeg", "%d.JPG", "x%d.jpg", "%d.jpg.bak"]),
    _stranger(["notes.txt", "Thumbs.db", ".DS_Store", "cover.png"])]


# ------------------------------------------------------------------ .npy arrays
def _npy_change(transform, rule: str):
    """Rewrite the array: `rule` SAME for a representation change, FAIL for bad values."""
    def changed(s: Subject, rng):
        s.path.write_bytes(transform(np.load(s.path), rng))
        return rule, None
    changed.__name__ = transform.__name__
    return changed


def other_dtype(array, rng):
    """The same values as bool, another integer width or byte order, or float."""
    kinds = [bool, np.int8, np.uint16, ">i4", np.float32, ">f8"]
    return _npy_bytes(array.astype(kinds[int(rng.integers(len(kinds)))]))


def other_layout(array, rng):
    """The same array in Fortran order, or with a version 2.0 header."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asfortranarray(array),
                              version=[(1, 0), (2, 0)][rng.integers(2)])
    return buffer.getvalue()


def bad_value(array, rng):
    """One value outside the domain (not 0/1 labels, negative or non-finite masks/scores)."""
    array = array.astype(np.float64)
    array.flat[int(rng.integers(array.size))] = [np.nan, np.inf, -1.0, -0.25][rng.integers(4)]
    return _npy_bytes(array)


def bad_shape(array, rng):
    shapes = [array.ravel()[:-1], np.concatenate([array, array[:1]]), array[None],
              array[..., None], np.asarray(array.flat[0])]
    return _npy_bytes(shapes[int(rng.integers(len(shapes)))])


def not_numbers(array, rng):
    """A pickled object array, text, complex numbers or an .npz archive: refused."""
    choice = int(rng.integers(4))
    if choice == 3:
        buffer = io.BytesIO()
        np.savez(buffer, array)
        return buffer.getvalue()
    kinds = [object, str, complex]
    return _npy_bytes(array.astype(kinds[choice]), allow_pickle=True)


def half_label(array, rng):
    """A label of 0.5: refused (labels are exactly 0 or 1)."""
    array = array.astype(np.float64)
    array[int(rng.integers(len(array)))] = 0.5
    return _npy_bytes(array)


def scaled_mask(array, rng):
    """Mask pixels marked with 255 (any positive value marks one): the same read."""
    return _npy_bytes(array * np.uint8(255))


def score_above_one(array, rng):
    array = array.copy()
    array[int(rng.integers(len(array)))] = 1.0 + float(rng.random()) + 1e-9
    return _npy_bytes(array)


NPY_MUTATIONS = [byte_edits] * 6 + [truncated, emptied, garbage, _npy_change(other_layout, SAME),
                                    _npy_change(bad_value, FAIL), _npy_change(bad_shape, FAIL),
                                    _npy_change(not_numbers, FAIL)]
LABEL_MUTATIONS = NPY_MUTATIONS + [_npy_change(other_dtype, SAME), _npy_change(half_label, FAIL)]
MASK_MUTATIONS = NPY_MUTATIONS + [_npy_change(other_dtype, SAME), _npy_change(scaled_mask, SAME)]
SCORE_MUTATIONS = NPY_MUTATIONS + [_npy_change(score_above_one, FAIL)]


def frame_scores(root: Path) -> Subject:
    """A scores folder and a labels folder of one video, read by the evaluation."""
    (root / "scores").mkdir(parents=True)
    (root / "labels").mkdir()
    np.save(root / "scores" / "v.npy", np.linspace(0.0, 1.0, T))
    np.save(root / "labels" / "v.npy", (np.arange(T) % 3 == 0).astype(np.uint8))
    return Subject(root, root / "scores" / "v.npy",
                   lambda: read_frame_arrays(root / "scores", root / "labels"), _canonical_npy)


# ------------------------------------------------------------------ chat question files
@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(Path(__file__).parents[2] / "tvad_jax" / "assets" / "backbone")


def _questions(tokenizer) -> Callable[[Path], Subject]:
    def build(root: Path) -> Subject:
        root.mkdir()
        path = root / "questions.txt"
        path.write_text("Is there any anomaly in this video?\nWhat is the person doing?\n")
        return Subject(root, path, lambda: read_questions(path, tokenizer, max_turns=3),
                       _canonical_lines)
    build.__name__ = "questions"
    return build


def padded_lines(s: Subject, rng):
    s.path.write_text("".join(f"  {line}\t\n" for line in s.path.read_text().splitlines()))
    return SAME, None


def too_many(s: Subject, rng):
    """More questions than turns: refused."""
    s.path.write_text(s.path.read_text() * 2)
    return FAIL, None


def too_long(s: Subject, rng):
    """A question longer than a turn holds: refused."""
    s.path.write_text("why " * int(rng.integers(30, 3000)) + "?\n")
    return FAIL, None


QUESTION_MUTATIONS = [byte_edits] * 6 + TEXT_VARIANTS + [
    padded_lines, too_many, too_long, truncated, emptied, garbage]

# ------------------------------------------------------------------ the runs
FORMATS = {   # name: (build, mutations, share of CASES)
    "ubnormal_tracks": (ubnormal_tracks, ROW_MUTATIONS, 0.10),
    "annotation_png": (annotation_png, PNG_MUTATIONS, 0.10),
    "sidecar": (sidecar, JSON_MUTATIONS, 0.06),
    "video.mp4": (_video(".mp4"), VIDEO_MUTATIONS, 0.02),
    "video.avi": (_video(".avi"), VIDEO_MUTATIONS, 0.02),
    "shanghaitech_frames": (_shanghaitech("frames"), FRAME_MUTATIONS, 0.07),
    "shanghaitech_labels": (_shanghaitech("labels", _canonical_npy), LABEL_MUTATIONS, 0.08),
    "shanghaitech_masks": (_shanghaitech("masks", _canonical_npy), MASK_MUTATIONS, 0.07),
    "community_tracks": (community_tracks, ROW_MUTATIONS, 0.10),
    "detections": (detections, ROW_MUTATIONS, 0.10),
    "frame_scores": (frame_scores, SCORE_MUTATIONS, 0.08),
    "questions": (None, QUESTION_MUTATIONS, 0.08),
}
CONFIG_SHARE = 0.12


def _count(share: float) -> int:
    return max(10, round(CASES * share))


@pytest.mark.parametrize("name", FORMATS)
def test_mutated_files_give_named_errors_or_what_they_mean(tmp_path, name, tokenizer):
    build, mutations, share = FORMATS[name]
    outcomes = _fuzz(tmp_path, build or _questions(tokenizer), mutations, _count(share),
                     SEED + list(FORMATS).index(name))
    assert outcomes["error"] and outcomes["read"]


# ------------------------------------------------------------------ config overrides
def _leaves(config, prefix: str = ""):
    """(dotted key, declared type, value) of every field of a config tree."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{field.name}.")
        else:
            yield prefix + field.name, typing.get_type_hints(type(config))[field.name], value


def _override_text(value) -> str:
    """How a user writes `value` in an override."""
    if value is None or isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(_override_text, value))
    return repr(value) if isinstance(value, float) else str(value)


_TRUTH = {"true": "true", "1": "true", "yes": "true", "false": "false", "0": "false", "no": "false"}


def _canonical_value(kind, raw: str) -> str | None:
    """The override value `raw` restated plainly for a field of type `kind`; None if it is
    no value of that type (integers and decimals are plain ASCII, floats finite)."""
    raw = raw.strip()
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in args if a is not type(None))
        return "none" if raw.lower() in ("none", "null") else _canonical_value(inner, raw)
    if origin is tuple:
        items = [_canonical_value(args[0], s) for s in raw.strip("()[]").split(",") if s.strip()]
        return None if None in items else ",".join(items)
    if origin is typing.Literal:
        return raw if raw in args else None
    if kind is bool:
        return _TRUTH.get(raw.lower())
    if kind is int:
        return str(int(raw)) if re.fullmatch(r"[+-]?[0-9]+", raw) else None
    if kind is float:
        finite = _PLAIN.fullmatch(raw) and np.isfinite(float(raw))
        return repr(float(raw)) if finite else None
    return raw


def value_edits(key, kind, value, rng):
    """1-3 random edits of the value: read as its plain restatement, or refused."""
    raw = _edited(_override_text(value).encode(), rng).decode("utf-8", "surrogateescape")
    canonical = _canonical_value(kind, raw)
    return f"{key}={raw}", AS, None if canonical is None else f"{key}={canonical}"


def unchanged(key, kind, value, rng):
    """The field's own value, with white space around key and value: the same config."""
    return f" {key} = {_override_text(value)} ", SAME, None


def bad_key(key, kind, value, rng):
    """No '=', an unknown key, a section, a key below a field: refused."""
    section = key.rpartition(".")[0] or "x"
    return [f"{key}{_override_text(value)}", f"{key}x=1", f"{section}=1", f"{key}.x=1",
            f"{key.upper()}=1", f"={value}"][rng.integers(6)], FAIL, None


CONFIG_MUTATIONS = [value_edits] * 8 + [unchanged, bad_key]


def test_mutated_config_overrides_give_named_errors_or_what_they_mean():
    """Overrides of the default config: a ConfigError naming the key, or the config the
    override's plain restatement gives."""
    base = config_lib.get("default")
    leaves = list(_leaves(base))
    rng = np.random.default_rng(SEED + len(FORMATS))
    outcomes = Counter()
    for case in range(_count(CONFIG_SHARE)):
        mutation = CONFIG_MUTATIONS[int(rng.integers(len(CONFIG_MUTATIONS)))]
        item, rule, canonical = mutation(*leaves[int(rng.integers(len(leaves)))], rng)
        key = item.partition("=")[0].strip() if "=" in item else item
        try:
            restated = canonical and (lambda: config_lib.apply_overrides(base, [canonical]))
            outcomes[_judge(lambda: config_lib.apply_overrides(base, [item]), key, rule,
                            restated, base)] += 1
        except Exception as err:   # name the case, whatever went wrong
            raise AssertionError(f"case {case} ({mutation.__name__}): {item!r}: "
                                 f"{type(err).__name__}: {err}") from err
    assert outcomes["error"] and outcomes["read"]
