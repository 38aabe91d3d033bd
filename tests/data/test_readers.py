"""Readers on tiny hand-built trees of both real layouts, and on synthetic output."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tvad_jax.data.readers import ShanghaiTechReader, UBnormalReader, iter_records, make_reader
from tvad_jax.data.video_io import read_frame_dir, write_video
from tvad_jax.errors import DataError, InputError

T, H, W = 6, 32, 48


def _frames(seed=0, t=T):
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (1, H, W, 3))
    return np.clip(base + np.arange(t)[:, None, None, None] * 3, 0, 255).astype(np.uint8)


def _ubnormal_tree(root: Path) -> Path:
    """Scene1 with one abnormal video (objects 3 and 5; 5 abnormal in frames 2-4, two blobs
    in frame 3) and one normal video without annotations."""
    scene = root / "Scene1"
    scene.mkdir(parents=True)
    name = "abnormal_scene_1_scenario_2"
    write_video(scene / f"{name}.mp4", _frames())
    ann = scene / f"{name}_annotations"
    ann.mkdir()
    for t in range(T):
        ids = np.zeros((H, W), np.uint8)
        ids[5:10, 5 + t:12 + t] = 3                 # a normal object
        if 2 <= t <= 4:
            ids[20:26, 30:36] = 5                   # the anomaly
            if t == 3:
                ids[28:30, 40:41] = 5               # a smaller second blob of the same id
        Image.fromarray(ids).save(ann / f"{name}_{t:04d}_gt.png")
    (scene / f"{name}_tracks.txt").write_text("5,2,4\n")
    write_video(scene / "normal_scene_1_scenario_1.mp4", _frames(1))
    (root / "lists").mkdir()
    (root / "lists" / "abnormal_test_video_names.txt").write_text(f"{name}\n")
    (root / "lists" / "normal_test_video_names.txt").write_text("normal_scene_1_scenario_1\n")
    return root


def _shanghaitech_tree(root: Path) -> Path:
    videos = root / "training" / "videos"
    videos.mkdir(parents=True)
    write_video(videos / "01_001.avi", _frames(2), codec="mpeg4")
    frames_dir = root / "testing" / "frames" / "01_0014"
    frames_dir.mkdir(parents=True)
    for t, frame in enumerate(_frames(3)):
        Image.fromarray(frame).save(frames_dir / f"{t:03d}.jpg", quality=95)
    labels = np.array([0, 0, 1, 1, 1, 0])
    masks = np.zeros((T, H, W), np.uint8)
    masks[2:5, 10:20, 10:16] = 1
    masks[3, 10:20, 12:18] = 1                      # the region moves a little
    (root / "testing" / "test_frame_mask").mkdir(parents=True)
    (root / "testing" / "test_pixel_mask").mkdir(parents=True)
    np.save(root / "testing" / "test_frame_mask" / "01_0014.npy", labels)
    np.save(root / "testing" / "test_pixel_mask" / "01_0014.npy", masks)
    return root


def test_ubnormal_round_trip(tmp_path):
    root = _ubnormal_tree(tmp_path / "ubnormal")
    lists = root / "lists"
    reader = UBnormalReader(root, {"test": [lists / "abnormal_test_video_names.txt",
                                            lists / "normal_test_video_names.txt"]})
    names = reader.video_names("test")
    assert names == ["abnormal_scene_1_scenario_2", "normal_scene_1_scenario_1"]
    record = reader.read(names[0])
    assert record.frames.shape == (T, H, W, 3)
    assert record.labels.tolist() == [0, 0, 1, 1, 1, 0]
    expected = np.zeros((T, H, W), np.uint8)
    expected[2:5, 20:26, 30:36] = 1
    expected[3, 28:30, 40:41] = 1
    np.testing.assert_array_equal(record.masks, expected)
    # one box per frame: the largest component only (the community's largest-contour rule)
    assert record.tracks.tolist() == [[5, t, 30, 20, 35, 25] for t in (2, 3, 4)]
    normal = reader.read(names[1])
    assert normal.labels.sum() == 0 and normal.masks.sum() == 0 and len(normal.tracks) == 0
    assert record.sidecar is None


def test_shanghaitech_round_trip(tmp_path):
    root = _shanghaitech_tree(tmp_path / "shanghaitech")
    reader = ShanghaiTechReader(root)
    assert reader.video_names("train") == ["01_001"]
    assert reader.video_names("test") == ["01_0014"]
    train = reader.read("01_001")
    assert train.frames.shape == (T, H, W, 3) and train.labels.sum() == 0
    test = reader.read("01_0014")
    assert test.labels.tolist() == [0, 0, 1, 1, 1, 0]
    assert test.masks.sum() == 60 + 80 + 60   # 10x6, 10x8, 10x6 pixels
    # tracks derived from the masks: one track, linked across frames 2-4
    assert test.tracks.tolist() == [[0, 2, 10, 10, 15, 19], [0, 3, 10, 10, 17, 19],
                                    [0, 4, 10, 10, 15, 19]]


def test_shanghaitech_reads_community_track_files(tmp_path):
    root = _shanghaitech_tree(tmp_path / "shanghaitech")
    tracks_dir = tmp_path / "tracks"
    tracks_dir.mkdir()
    (tracks_dir / "01_0014.txt").write_text("7,3,1,2,3,4\n7,2,1,2,3,4\n")
    record = ShanghaiTechReader(root, tracks_dir).read("01_0014")
    assert record.tracks.tolist() == [[7, 3, 1, 2, 3, 4], [7, 2, 1, 2, 3, 4]]


def test_synthetic_output_through_the_ubnormal_reader(tiny_synth):
    _, root = tiny_synth
    reader = make_reader("synthetic", root)
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    frames_by_name = {v["name"]: v["abnormal_frames"] for v in manifest["videos"]}
    for split in ("train", "test"):
        for record in iter_records(reader, split):
            assert record.labels.sum() == frames_by_name[record.name]
            assert record.sidecar["video"] == record.name
            anomalous = {o["id"]: o["anomaly"] for o in record.sidecar["objects"] if o["anomaly"]}
            for obj_id, frame, *box in record.tracks.tolist():
                start, end = anomalous[obj_id]
                assert start <= frame <= end
                assert record.masks[frame, box[1]:box[3] + 1, box[0]:box[2] + 1].any()
            assert len({(r[0], r[1]) for r in record.tracks.tolist()}) == len(record.tracks)


# ------------------------------------------------------------------ bad input
def test_truncated_video_names_the_file(tmp_path):
    root = _ubnormal_tree(tmp_path / "u")
    video = root / "Scene1" / "normal_scene_1_scenario_1.mp4"
    video.write_bytes(video.read_bytes()[:600])
    with pytest.raises(DataError, match="normal_scene_1_scenario_1.mp4: corrupt or truncated"):
        UBnormalReader(root).read("normal_scene_1_scenario_1")


def test_missing_video_and_missing_annotation_file(tmp_path):
    root = _ubnormal_tree(tmp_path / "u")
    reader = UBnormalReader(root)
    with pytest.raises(DataError, match="abnormal_scene_1_scenario_9.mp4: video file not found"):
        reader.read("abnormal_scene_1_scenario_9")
    (root / "Scene1" / "abnormal_scene_1_scenario_2_tracks.txt").unlink()
    with pytest.raises(DataError, match="_tracks.txt: missing annotation file"):
        reader.read("abnormal_scene_1_scenario_2")


def test_frame_count_mismatch_between_video_and_masks(tmp_path):
    root = _ubnormal_tree(tmp_path / "u")
    ann = root / "Scene1" / "abnormal_scene_1_scenario_2_annotations"
    (ann / "abnormal_scene_1_scenario_2_0005_gt.png").unlink()
    with pytest.raises(DataError, match="annotations: no annotation map for frame 5: 5 found, "
                                        "expected frames 0-5"):
        UBnormalReader(root).read("abnormal_scene_1_scenario_2")
    st = _shanghaitech_tree(tmp_path / "s")
    np.save(st / "testing" / "test_frame_mask" / "01_0014.npy", np.zeros(5))
    with pytest.raises(DataError, match=r"01_0014.npy: frame-count mismatch"):
        ShanghaiTechReader(st).read("01_0014")


def test_malformed_track_rows_name_file_and_line(tmp_path):
    root = _ubnormal_tree(tmp_path / "u")
    tracks = root / "Scene1" / "abnormal_scene_1_scenario_2_tracks.txt"
    tracks.write_text("5,2,4\n5,two,4\n")
    with pytest.raises(DataError, match="_tracks.txt: line 2: expected 'object_id,start,end'"):
        UBnormalReader(root).read("abnormal_scene_1_scenario_2")
    tracks.write_text("5,2,40\n")
    with pytest.raises(DataError, match="line 1: range 2-40 outside the video's 6 frames"):
        UBnormalReader(root).read("abnormal_scene_1_scenario_2")


def test_unknown_layout_and_empty_split(tmp_path):
    root = _ubnormal_tree(tmp_path / "u")
    with pytest.raises(DataError, match="unknown layout 'kinetics'"):
        make_reader("kinetics", root)
    with pytest.raises(DataError, match="not the UBnormal layout"):
        UBnormalReader(root).read("some_video")
    with pytest.raises(DataError, match="not the ShanghaiTech layout"):
        ShanghaiTechReader(root).video_names("test")
    empty = root / "lists" / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(DataError, match="split 'val' is empty"):
        UBnormalReader(root, {"val": [empty]}).video_names("val")
    with pytest.raises(DataError, match="dataset root not found"):
        UBnormalReader(tmp_path / "nowhere")


def test_skip_bad_reports_and_continues(tmp_path):
    root = _ubnormal_tree(tmp_path / "u")
    names = root / "lists" / "all.txt"
    names.write_text("abnormal_scene_1_scenario_2\nnormal_scene_1_scenario_1\n")
    video = root / "Scene1" / "abnormal_scene_1_scenario_2.mp4"
    video.write_bytes(b"not a video at all")
    reader = UBnormalReader(root, {"test": [names]})
    with pytest.raises(DataError):
        list(iter_records(reader, "test"))
    reports = []
    records = list(iter_records(reader, "test", skip_bad=True, report=reports.append))
    assert [r.name for r in records] == ["normal_scene_1_scenario_1"]
    assert len(reports) == 1 and "abnormal_scene_1_scenario_2.mp4" in reports[0]


# ------------------------------------------------------------------ strict edges (issue 17)
ABNORMAL = "abnormal_scene_1_scenario_2"


def _ann(root: Path, t: int) -> Path:
    return root / "Scene1" / f"{ABNORMAL}_annotations" / f"{ABNORMAL}_{t:04d}_gt.png"


@pytest.mark.parametrize("content, message", [
    (b"garbage, not a PNG", "unreadable annotation PNG"),
    (b"", "unreadable annotation PNG"),
    (None, "unreadable annotation PNG"),            # truncated: the first half of the file
])
def test_bad_annotation_png_is_a_named_error(tmp_path, content, message):
    root = _ubnormal_tree(tmp_path / "u")
    png = _ann(root, 3)
    png.write_bytes(content if content is not None else png.read_bytes()[:60])
    with pytest.raises(DataError, match=rf"_0003_gt.png: {message}"):
        UBnormalReader(root).read(ABNORMAL)


@pytest.mark.parametrize("image, message", [
    (Image.fromarray(np.dstack([np.zeros((H, W), np.uint8), np.ones((H, W), np.uint8),
                                np.zeros((H, W), np.uint8)])), "unequal channels"),
    (Image.fromarray(np.zeros((H, W), np.uint16)), "mode 'I;16'"),
    (Image.fromarray(np.zeros((H, W), np.float32)), "a TIFF image, expected a PNG"),  # no float PNG
    (Image.new("1", (W, H)), "mode '1'"),
])
def test_annotation_png_of_another_mode_is_refused(tmp_path, image, message):
    root = _ubnormal_tree(tmp_path / "u")
    image.save(_ann(root, 3).with_suffix(".tiff") if image.mode == "F" else _ann(root, 3),
               format="TIFF" if image.mode == "F" else "PNG")
    if image.mode == "F":
        _ann(root, 3).with_suffix(".tiff").replace(_ann(root, 3))
    with pytest.raises(DataError, match=rf"_0003_gt.png: .*{message}"):
        UBnormalReader(root).read(ABNORMAL)


def test_annotation_of_another_image_format_is_refused(tmp_path):
    """A lossy JPEG (or any non-PNG) under the .png name would read as other ids."""
    root = _ubnormal_tree(tmp_path / "u")
    Image.open(_ann(root, 3)).save(_ann(root, 3), format="JPEG")
    with pytest.raises(DataError, match=r"_0003_gt.png: a JPEG image, expected a PNG"):
        UBnormalReader(root).read(ABNORMAL)


def _idat_crc(png: bytes) -> slice:
    """Where the CRC of a PNG's last IDAT chunk is (just before the IEND chunk)."""
    end = png.index(b"IEND") - 4
    return slice(end - 4, end)


def test_annotation_png_with_a_damaged_chunk_is_refused(tmp_path):
    """Pixel data that fails its chunk's CRC (here: other ids under the original checksum);
    PIL alone decoded such data as other ids without complaint (found by
    tests/data/test_fuzz.py)."""
    root = _ubnormal_tree(tmp_path / "u")
    crc = _ann(root, 3).read_bytes()[_idat_crc(_ann(root, 3).read_bytes())]
    Image.fromarray(np.full((H, W), 9, np.uint8)).save(_ann(root, 3))
    data = bytearray(_ann(root, 3).read_bytes())
    data[_idat_crc(data)] = crc
    _ann(root, 3).write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"_0003_gt.png: unreadable annotation PNG \(.*checksum"):
        UBnormalReader(root).read(ABNORMAL)


def test_grey_annotation_stored_as_rgb_reads_the_same(tmp_path):
    root = _ubnormal_tree(tmp_path / "u")
    expected = UBnormalReader(root).read(ABNORMAL)
    for t in range(T):
        Image.open(_ann(root, t)).convert("RGB").save(_ann(root, t))
    again = UBnormalReader(root).read(ABNORMAL)
    np.testing.assert_array_equal(again.masks, expected.masks)
    np.testing.assert_array_equal(again.tracks, expected.tracks)


def test_annotation_maps_are_matched_by_number_and_gaps_are_errors(tmp_path):
    root = _ubnormal_tree(tmp_path / "u")
    expected = UBnormalReader(root).read(ABNORMAL)
    for t in range(T):                              # unpadded numbers: 10 sorts before 2 as text
        _ann(root, t).rename(_ann(root, t).with_name(f"{ABNORMAL}_{t}_gt.png"))
    np.testing.assert_array_equal(UBnormalReader(root).read(ABNORMAL).masks, expected.masks)
    ann = _ann(root, 0).parent
    (ann / f"{ABNORMAL}_3_gt.png").rename(ann / f"{ABNORMAL}_6_gt.png")   # same count, a gap
    with pytest.raises(DataError, match="no annotation map for frame 3"):
        UBnormalReader(root).read(ABNORMAL)


def test_normal_video_annotation_count_is_checked_against_its_length(tmp_path):
    root = _ubnormal_tree(tmp_path / "u")
    name = "normal_scene_1_scenario_1"
    ann = root / "Scene1" / f"{name}_annotations"
    ann.mkdir()
    for t in range(T - 1):
        Image.fromarray(np.zeros((H, W), np.uint8)).save(ann / f"{name}_{t:04d}_gt.png")
    with pytest.raises(DataError, match=f"no annotation map for frame {T - 1}"):
        UBnormalReader(root).read(name)


@pytest.mark.parametrize("rows, message", [
    ("5,2,4\n5,2,4\n", "line 2: object 5 overlaps its range on line 1"),
    ("5,2,4\n5,4,5\n", "line 2: object 5 overlaps its range on line 1"),
    ("5,2,4\n7,2,4\n", "line 2: object 7 is in no annotation map of frames 2-4"),
    ("", "no tracks for an abnormal video"),
    ("\n\n", "no tracks for an abnormal video"),
    ("5,2,1_0\n", "line 1: expected 'object_id,start,end'"),
    ("5,2,inf\n", "line 1: expected 'object_id,start,end'"),
    ("5,2,1e400\n", "line 1: expected 'object_id,start,end'"),
    ("5,-2,4\n", "line 1: expected 'object_id,start,end'"),
    ("\x00\x01\xff\xfe5,2,4\n", "binary file"),
    ("5,2,4\xff\n", "not UTF-8"),
])
def test_bad_ubnormal_tracks_files(tmp_path, rows, message):
    root = _ubnormal_tree(tmp_path / "u")
    (root / "Scene1" / f"{ABNORMAL}_tracks.txt").write_bytes(rows.encode("latin-1"))
    with pytest.raises(DataError, match=f"_tracks.txt: {message}"):
        UBnormalReader(root).read(ABNORMAL)


def test_tracks_file_with_bom_and_crlf_reads_correctly(tmp_path):
    root = _ubnormal_tree(tmp_path / "u")
    expected = UBnormalReader(root).read(ABNORMAL)
    (root / "Scene1" / f"{ABNORMAL}_tracks.txt").write_bytes(b"\xef\xbb\xbf5,2,4\r\n\r\n")
    np.testing.assert_array_equal(UBnormalReader(root).read(ABNORMAL).tracks, expected.tracks)


def _with_sidecar(root: Path, **changes) -> Path:
    sidecar = {"video": ABNORMAL, "scene": 1, "split": "test", "seed": [3], "num_frames": T,
               "height": H, "width": W, "fps": 30, "nuisances": {},
               "objects": [{"id": 5, "class": "car", "attributes": {"size": "small",
                                                                     "color": "red"},
                            "anomaly_type": "fast", "anomaly": [2, 4],
                            "timeline": [{"start": 0, "end": 5, "label": "driving"}],
                            "boxes": [[2, 30, 20, 35, 25]]}]}
    sidecar.update(changes)
    path = root / "Scene1" / f"{ABNORMAL}.json"
    path.write_text(json.dumps(sidecar))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"fps": 0}, "fps must be positive"),
    ({"num_frames": None}, "field 'num_frames' missing or not int"),
    ({"num_frames": True}, "field 'num_frames' missing or not int"),
    ({"objects": {"id": 5}}, "field 'objects' missing or not list"),
    ({"objects": [7]}, r"objects\[0\]: expected a JSON object"),
    ({"objects": [{"id": 5}]}, r"objects\[0\]: field 'class' missing"),
    ({"video": "other"}, "sidecar of video 'other'"),
    ({"seed": []}, "seed must be a list"),
    ({"num_frames": T + 1}, "decoded 6 frames of 32x48, its sidecar records 7 frames"),
])
def test_sidecar_of_the_wrong_shape(tmp_path, changes, message):
    root = _ubnormal_tree(tmp_path / "u")
    _with_sidecar(root, **changes)
    with pytest.raises(DataError, match=message):
        UBnormalReader(root).read(ABNORMAL)


@pytest.mark.parametrize("text, message", [
    ('{"fps": NaN}', "not valid JSON"),
    ('{"fps": 1e400}', "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ("\x00\x9c\xff binary", "binary file"),
    ("[" * 100000, "not valid JSON"),
])
def test_unreadable_sidecar(tmp_path, text, message):
    root = _ubnormal_tree(tmp_path / "u")
    (root / "Scene1" / f"{ABNORMAL}.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=f"{ABNORMAL}.json: .*{message}"):
        UBnormalReader(root).read_sidecar(ABNORMAL)


def test_valid_sidecar_with_bom_reads(tmp_path):
    root = _ubnormal_tree(tmp_path / "u")
    path = _with_sidecar(root)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert UBnormalReader(root).read(ABNORMAL).sidecar["fps"] == 30


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 0, 0.5, 1, 1, 0]), "frame 2: label 0.5, expected 0 or 1"),
    (np.array([0, 0, -1, 1, 1, 0]), "frame 2: label -1, expected 0 or 1"),
    (np.array([0, 0, np.nan, 1, 1, 0]), "frame 2: label nan, expected 0 or 1"),
    (np.array(["0", "1", "0", "1", "1", "0"]), "expected numbers, got dtype <U1"),
    (np.zeros(0), "empty array"),
])
def test_shanghaitech_labels_must_be_0_or_1(tmp_path, labels, message):
    root = _shanghaitech_tree(tmp_path / "s")
    np.save(root / "testing" / "test_frame_mask" / "01_0014.npy", labels)
    with pytest.raises(DataError, match=f"01_0014.npy: {message}"):
        ShanghaiTechReader(root).read("01_0014")


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'"])
def test_empty_or_truncated_npy(tmp_path, content):
    root = _shanghaitech_tree(tmp_path / "s")
    (root / "testing" / "test_pixel_mask" / "01_0014.npy").write_bytes(content)
    with pytest.raises(DataError, match="01_0014.npy: not a readable .npy array"):
        ShanghaiTechReader(root).read("01_0014")


def test_shanghaitech_frames_are_ordered_by_number_and_gaps_are_errors(tmp_path):
    root = _shanghaitech_tree(tmp_path / "s")
    frames_dir = root / "testing" / "frames" / "01_0014"
    expected = ShanghaiTechReader(root).read("01_0014").frames
    for t in range(T):                              # 0.jpg .. 5.jpg, as ShanghaiTech names them
        (frames_dir / f"{t:03d}.jpg").rename(frames_dir / f"{t + 10}.jpg")
    with pytest.raises(DataError, match="no image for frame 0"):
        ShanghaiTechReader(root).read("01_0014")
    for t in range(T):
        (frames_dir / f"{t + 10}.jpg").rename(frames_dir / f"{t}.jpg")
    np.testing.assert_array_equal(ShanghaiTechReader(root).read("01_0014").frames, expected)
    (frames_dir / "2.jpg").unlink()
    with pytest.raises(DataError, match="no image for frame 2"):
        ShanghaiTechReader(root).read("01_0014")


def test_shanghaitech_frames_sort_numerically_past_ten(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(12):
        Image.fromarray(np.full((8, 8, 3), t * 20, np.uint8)).save(folder / f"{t}.png")
    frames = read_frame_dir(folder, ".png")
    assert frames[:, 0, 0, 0].tolist() == [t * 20 for t in range(12)]


def test_shanghaitech_community_tracks_are_checked(tmp_path):
    root = _shanghaitech_tree(tmp_path / "s")
    with pytest.raises(DataError, match="tracks: tracks folder not found"):
        ShanghaiTechReader(root, tmp_path / "tracks")
    tracks_dir = tmp_path / "tracks"
    tracks_dir.mkdir()
    with pytest.raises(DataError, match="01_0014.txt: missing tracks file for an abnormal"):
        ShanghaiTechReader(root, tracks_dir).read("01_0014")
    (tracks_dir / "01_0014.txt").write_text("\n")
    with pytest.raises(DataError, match="01_0014.txt: no tracks for an abnormal video"):
        ShanghaiTechReader(root, tracks_dir).read("01_0014")
    (tracks_dir / "01_0014.txt").write_text("7,2,1,2,3,4\n7,6,1,2,3,4\n")
    with pytest.raises(InputError, match="01_0014.txt:2: frame_id 6 beyond the 6 frames"):
        ShanghaiTechReader(root, tracks_dir).read("01_0014")


def test_truncated_avi_is_an_error_not_a_shorter_video(tmp_path):
    root = _shanghaitech_tree(tmp_path / "s")
    video = root / "training" / "videos" / "01_001.avi"
    data = video.read_bytes()
    video.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(DataError, match="01_001.avi: (corrupt or truncated|frame )"):
        ShanghaiTechReader(root).read("01_001")
