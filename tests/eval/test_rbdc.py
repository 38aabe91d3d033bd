"""RBDC/TBDC: hand-computed cases, a loop port of the community script, real track files."""

import numpy as np
import pytest
from shared_data import shanghaitech_tracks_dir

from tvad_jax.data import regions, track_files
from tvad_jax.errors import EvalInputError, InputError
from tvad_jax.eval import rbdc

SHANGHAITECH_TEST_FRAMES = 40791


def make_tracks(rows):
    """rows: (video, track, frame, x0, y0, x1, y1) with global track ids."""
    rows = np.array(rows, dtype=np.float64).reshape(-1, 7)
    return rbdc.Tracks(video=rows[:, 0].astype(int), track=rows[:, 1].astype(int),
                       frame=rows[:, 2].astype(int), boxes=rows[:, 3:7],
                       num_tracks=len(np.unique(rows[:, 1])))


def make_detections(rows):
    """rows: (video, frame, x0, y0, x1, y1, score)."""
    rows = np.array(rows, dtype=np.float64).reshape(-1, 7)
    return rbdc.Detections(video=rows[:, 0].astype(int), frame=rows[:, 1].astype(int),
                           boxes=rows[:, 2:6], scores=rows[:, 6])


def reference_rbdc_tbdc(tracks, detections, num_frames, alpha=0.1, beta=0.1):
    """A direct loop port of the community evaluation script (one detection at a time)."""
    def iou(a, b):
        ix = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
        iy = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
        inter = ix * iy
        return inter / ((a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) *
                        (b[3] - b[1] + 1) - inter)

    by_frame, found = {}, {}
    for i in range(len(tracks.frame)):
        key = (tracks.video[i], tracks.frame[i])
        by_frame.setdefault(key, []).append(i)
        found.setdefault(key, []).append(False)
    track_len = [0] * tracks.num_tracks
    for t in tracks.track:
        track_len[t] += 1
    matched = [0] * tracks.num_tracks
    order = sorted(range(len(detections.scores)), key=lambda k: detections.scores[k],
                   reverse=True)
    tp, fp, tbdr = [], [], []
    for k in order:
        key = (detections.video[k], detections.frame[k])
        regions = by_frame.get(key)
        new = 0
        hits = [j for j, i in enumerate(regions or []) if
                iou(tracks.boxes[i], detections.boxes[k]) >= beta]
        for j in hits:
            if not found[key][j]:
                found[key][j] = True
                new += 1
                matched[tracks.track[regions[j]]] += 1
        tp.append(new)
        fp.append(0 if hits else 1)
        tbdr.append(sum(m / n >= alpha for m, n in zip(matched, track_len)) / len(track_len))
    fpr = np.r_[0, np.cumsum(fp)] / num_frames
    rbdr = np.r_[0, np.cumsum(tp)] / len(tracks.frame)
    tbdr = np.r_[0, tbdr]
    stop = np.where(fpr <= 1)[0][-1] + 1
    fpr, rbdr, tbdr = list(fpr[:stop]), list(rbdr[:stop]), list(tbdr[:stop])
    if fpr[-1] != 1:
        fpr, rbdr, tbdr = fpr + [1.0], rbdr + [rbdr[-1]], tbdr + [tbdr[-1]]
    area = lambda y: sum((fpr[i + 1] - fpr[i]) * (y[i + 1] + y[i]) / 2  # noqa: E731
                         for i in range(len(fpr) - 1))
    return area(rbdr), area(tbdr)


def test_inclusive_box_iou():
    # [0,9]x[0,9] (100 px) vs [5,14]x[5,14] (100 px): 5x5 = 25 shared pixels.
    assert regions.box_iou(np.array([0, 0, 9, 9.]), np.array([5, 5, 14, 14.])) == 25 / 175
    assert regions.box_iou(np.array([0, 0, 9, 9.]), np.array([10, 0, 19, 9.])) == 0.0


# One video, 10 frames. Track 0: frames 0 and 1; track 1: frame 0.
HAND_TRACKS = [(0, 0, 0, 0, 0, 9, 9), (0, 0, 1, 0, 0, 9, 9), (0, 1, 0, 5, 5, 14, 14)]
HAND_DETECTIONS = [
    (0, 0, 0, 0, 14, 14, 0.9),   # IoU 100/225 with both frame-0 regions: 2 TP
    (0, 0, 0, 0, 9, 9, 0.8),     # matches both again (1.0 and 25/175): neither TP nor FP
    (0, 5, 0, 0, 9, 9, 0.7),     # frame without regions: FP
    (0, 1, 50, 50, 60, 60, 0.6),  # frame with a region, no overlap: FP
    (0, 1, 0, 0, 9, 9, 0.5),     # track 0 frame 1: TP
]


def test_hand_case_one_detection_matches_several_regions_and_fpr_short_of_one():
    result = rbdc.rbdc_tbdc(make_tracks(HAND_TRACKS), make_detections(HAND_DETECTIONS[::-1]),
                            num_frames=10)
    np.testing.assert_allclose(result.fpr, [0, 0, 0, 0.1, 0.2, 0.2, 1.0])
    np.testing.assert_allclose(result.rbdr, [0, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(result.tbdr, [0, 1, 1, 1, 1, 1, 1])
    # Trapezoids: 0.1 * 2/3 + 0.1 * 2/3 + 0.8 * 1 (the last value held to FPR 1).
    assert result.rbdc == pytest.approx(0.2 * 2 / 3 + 0.8)
    assert result.tbdc == pytest.approx(1.0)
    assert (result.num_regions, result.num_tracks, result.num_detections) == (3, 2, 5)


def test_hand_case_alpha_needs_several_regions_of_a_track():
    # alpha 0.6: track 0 (2 regions) needs both, track 1 its only one.
    result = rbdc.rbdc_tbdc(make_tracks(HAND_TRACKS), make_detections(HAND_DETECTIONS),
                            num_frames=10, alpha=0.6)
    np.testing.assert_allclose(result.tbdr, [0, 0.5, 0.5, 0.5, 0.5, 1, 1])
    assert result.tbdc == pytest.approx(0.2 * 0.5 + 0.8 * 1.0)


def test_repeated_detections_of_one_region_count_once():
    tracks = make_tracks([(0, 0, 3, 10, 10, 19, 19), (0, 1, 4, 10, 10, 19, 19)])
    detections = make_detections([(0, 3, 10, 10, 19, 19, s) for s in (0.2, 0.9, 0.5)])
    result = rbdc.rbdc_tbdc(tracks, detections, num_frames=4)
    np.testing.assert_allclose(result.rbdr, [0, 0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(result.fpr, [0, 0, 0, 0, 1])
    assert result.rbdc == pytest.approx(0.5)
    assert result.tbdc == pytest.approx(0.5)


def test_curve_is_cut_at_fpr_one():
    # 2 frames: a TP, three FPs (FPR 0.5, 1, 1.5), then a TP past FPR 1 that must not count.
    tracks = make_tracks([(0, 0, 0, 0, 0, 9, 9), (0, 1, 1, 0, 0, 9, 9)])
    detections = make_detections([(0, 0, 0, 0, 9, 9, 0.9), (0, 0, 50, 50, 59, 59, 0.8),
                                  (0, 0, 50, 50, 59, 59, 0.7), (0, 0, 50, 50, 59, 59, 0.6),
                                  (0, 1, 0, 0, 9, 9, 0.1)])
    result = rbdc.rbdc_tbdc(tracks, detections, num_frames=2)
    np.testing.assert_allclose(result.fpr, [0, 0, 0.5, 1.0])
    assert result.rbdc == pytest.approx(0.5)
    assert result.tbdc == pytest.approx(0.5)


def test_other_video_same_frame_is_a_false_positive_and_ties_keep_input_order():
    tracks = make_tracks([(0, 0, 0, 0, 0, 9, 9)])
    # Equal scores: the community script's stable sort keeps input order, FP first here.
    detections = make_detections([(1, 0, 0, 0, 9, 9, 0.5), (0, 0, 0, 0, 9, 9, 0.5)])
    result = rbdc.rbdc_tbdc(tracks, detections, num_frames=10)
    np.testing.assert_allclose(result.fpr, [0, 0.1, 0.1, 1.0])
    np.testing.assert_allclose(result.rbdr, [0, 0, 1, 1])
    assert result.rbdc == pytest.approx(0.9)


def test_no_detections_scores_zero():
    result = rbdc.rbdc_tbdc(make_tracks(HAND_TRACKS), make_detections([]), num_frames=10)
    assert result.rbdc == 0.0 and result.tbdc == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_port_of_community_script(seed):
    rng = np.random.default_rng(seed)
    rows, track = [], 0
    for video in range(3):
        for _ in range(rng.integers(1, 5)):
            start, length = rng.integers(0, 30), rng.integers(1, 15)
            x, y = rng.integers(0, 50, 2)
            for frame in range(start, start + length):
                x, y = x + rng.integers(-3, 4), y + rng.integers(-3, 4)
                rows.append((video, track, frame, x, y, x + rng.integers(3, 12),
                             y + rng.integers(3, 12)))
            track += 1
    dets = []
    for _ in range(rng.integers(50, 400)):
        x, y = rng.integers(0, 55, 2)
        dets.append((rng.integers(0, 3), rng.integers(0, 45), x, y, x + rng.integers(0, 15),
                     y + rng.integers(0, 15), rng.integers(0, 20) / 20))  # many score ties
    tracks, detections = make_tracks(rows), make_detections(dets)
    for num_frames, alpha, beta in ((40, 0.1, 0.1), (300, 0.5, 0.3), (1000, 1.0, 0.0)):
        result = rbdc.rbdc_tbdc(tracks, detections, num_frames, alpha, beta)
        expected = reference_rbdc_tbdc(tracks, detections, num_frames, alpha, beta)
        assert (result.rbdc, result.tbdc) == pytest.approx(expected, abs=1e-12)


def write_rows(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_file_round_trip(tmp_path):
    (tmp_path / "tracks").mkdir()
    (tmp_path / "det").mkdir()
    write_rows(tmp_path / "tracks" / "01_0001.txt", ["0,0,0,0,9,9", "0,1,0,0,9,9", "1,0,5,5,14,14"])
    write_rows(tmp_path / "tracks" / "01_0002.txt", [])  # a video without anomalies
    rows = np.array([r[1:] for r in HAND_DETECTIONS])
    track_files.write_detections(tmp_path / "det" / "01_0001.txt", rows)
    write_rows(tmp_path / "det" / "01_0002.txt", ["3,1,1,5,5,0.95"])  # one FP, ranked first
    result = rbdc.rbdc_tbdc_from_dirs(tmp_path / "tracks", tmp_path / "det", num_frames=10)
    # As the hand case, but one FP of video 2 first: FPR 0.1 at rank 1.
    np.testing.assert_allclose(result.fpr, [0, 0.1, 0.1, 0.1, 0.2, 0.3, 0.3, 1.0])
    np.testing.assert_allclose(result.rbdr, [0, 0, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 1, 1])
    assert result.rbdc == pytest.approx(0.1 * 2 / 3 + 0.1 * 2 / 3 + 0.7)
    track_files.write_tracks(tmp_path / "t.txt", [[0, 4, 1, 2, 3, 4]])
    np.testing.assert_array_equal(track_files.read_tracks_file(tmp_path / "t.txt"),
                                  [[0, 4, 1, 2, 3, 4]])


@pytest.mark.parametrize("kind, line, message", [
    ("tracks", "0,1,2,3,4", r"t\.txt:2: expected 6 comma-separated values"),
    ("tracks", "0,1,a,3,4,5", r"t\.txt:2: not a finite number"),
    ("tracks", "0,1.5,2,3,4,5", r"t\.txt:2: frame_id must be a non-negative integer"),
    ("tracks", "0,-1,2,3,4,5", r"t\.txt:2: frame_id must be a non-negative integer"),
    ("tracks", "0,1,9,3,4,5", r"t\.txt:2: box has x_max < x_min"),
    ("tracks", "0,0,1,1,5,5", r"t\.txt:2: track 0 already has a region in frame 0 \(line 1\)"),
    ("detections", "1,2,3,4,5,nan", r"d\.txt:2: not a finite number"),
    ("detections", "1,2,3,4,5", r"d\.txt:2: expected 6 comma-separated values"),
    ("detections", "-1,2,3,4,5,0.5", r"d\.txt:2: frame_id must be a non-negative integer"),
])
def test_malformed_rows_name_file_and_line(tmp_path, kind, line, message):
    if kind == "tracks":
        path = write_rows(tmp_path / "t.txt", ["0,0,1,1,5,5", line])
        reader = track_files.read_tracks_file
    else:
        path = write_rows(tmp_path / "d.txt", ["0,1,1,5,5,0.3", line])
        reader = track_files.read_detections_file
    with pytest.raises(EvalInputError, match=message):
        reader(path)


def test_unknown_video_and_api_errors(tmp_path):
    (tmp_path / "tracks").mkdir()
    (tmp_path / "det").mkdir()
    write_rows(tmp_path / "tracks" / "01_0001.txt", ["0,0,0,0,9,9"])
    write_rows(tmp_path / "det" / "01_0099.txt", ["0,0,0,9,9,0.5"])
    with pytest.raises(EvalInputError, match=r"01_0099\.txt: detections for video '01_0099'"):
        rbdc.rbdc_tbdc_from_dirs(tmp_path / "tracks", tmp_path / "det", 10)
    tracks = make_tracks(HAND_TRACKS)
    with pytest.raises(EvalInputError, match="score nan"):
        rbdc.rbdc_tbdc(tracks, make_detections([(0, 0, 0, 0, 9, 9, np.nan)]), 10)
    with pytest.raises(EvalInputError, match="frames must be positive"):
        rbdc.rbdc_tbdc(tracks, make_detections([]), 0)
    short = rbdc.Detections(video=np.zeros(2, int), frame=np.zeros(2, int),
                            boxes=np.zeros((2, 4)), scores=np.zeros(3))
    with pytest.raises(EvalInputError, match=r"detections: boxes must be \[N, 4\]"):
        rbdc.rbdc_tbdc(tracks, short, 10)
    with pytest.raises(EvalInputError, match="alpha"):
        rbdc.rbdc_tbdc(tracks, make_detections([]), 10, alpha=0.0)
    with pytest.raises(EvalInputError, match="no ground-truth regions"):
        rbdc.rbdc_tbdc(make_tracks([]), make_detections([]), 10)


def shanghaitech_files():
    assert shanghaitech_tracks_dir().is_dir(), (
        f"the shared ShanghaiTech track files are missing: {shanghaitech_tracks_dir().resolve()}")
    return sorted(p for p in shanghaitech_tracks_dir().glob("*.txt") if p.stem.lower() != "readme")


def test_real_shanghaitech_perfect_detections_score_one():
    videos, tracks = rbdc.read_tracks(shanghaitech_tracks_dir())
    assert len(videos) == len(shanghaitech_files()) == 107
    perfect = rbdc.Detections(video=tracks.video, frame=tracks.frame, boxes=tracks.boxes,
                              scores=np.ones(len(tracks.frame)))
    result = rbdc.rbdc_tbdc(tracks, perfect, SHANGHAITECH_TEST_FRAMES)
    assert result.rbdc == 1.0 and result.tbdc == 1.0
    assert result.num_regions == 18937 and result.num_tracks == 158


def test_real_shanghaitech_out_of_order_files_match_loop_port():
    # 01_0134 and 03_0059 list frames out of order; row order must not matter.
    names = ["01_0014", "01_0134", "03_0059", "05_0020"]
    rows = [track_files.read_tracks_file(shanghaitech_tracks_dir() / f"{n}.txt") for n in names]
    frames = rows[1][rows[1][:, 0] == rows[1][0, 0], 1]
    assert (np.diff(frames) < 0).any(), "01_0134 no longer lists frames out of order"
    tracks = rbdc.tracks_from_rows(rows)
    rng = np.random.default_rng(0)
    jitter = rng.normal(0, 25, size=tracks.boxes.shape)
    keep = rng.random(len(tracks.frame)) < 0.5
    detections = rbdc.Detections(video=tracks.video[keep], frame=tracks.frame[keep],
                                 boxes=(tracks.boxes + jitter)[keep],
                                 scores=rng.random(keep.sum()))
    result = rbdc.rbdc_tbdc(tracks, detections, num_frames=800)
    assert 0 < result.rbdc < 1 and 0 < result.tbdc <= 1
    expected = reference_rbdc_tbdc(tracks, detections, 800)
    assert (result.rbdc, result.tbdc) == pytest.approx(expected, abs=1e-12)
    shuffled = rbdc.tracks_from_rows([r[rng.permutation(len(r))] for r in rows])
    again = rbdc.rbdc_tbdc(shuffled, detections, num_frames=800)
    assert (again.rbdc, again.tbdc) == pytest.approx((result.rbdc, result.tbdc), abs=1e-12)


@pytest.mark.parametrize("line, message", [
    ("0,1,inf,3,4,5", r"t\.txt:2: not a finite number"),
    ("0,1,1e400,3,4,5", r"t\.txt:2: not a finite number"),
    ("0,1_0,2,3,4,5", r"t\.txt:2: not a finite number"),
    ("1e300,1,2,3,4,5", r"t\.txt:2: track_id must be a non-negative integer below 2\^53"),
    ("0,10,2,3,4,5", r"t\.txt:2: frame_id 10 beyond the 10 frames"),
])
def test_tracks_rows_outside_the_format(tmp_path, line, message):
    path = write_rows(tmp_path / "t.txt", ["0,0,1,1,5,5", line])
    with pytest.raises(EvalInputError, match=message):
        track_files.read_tracks_file(path, num_frames=10)


def test_binary_tracks_file_and_legitimate_variants(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\x00\x01\x02\xff")
    with pytest.raises(InputError, match=r"t\.txt: binary file"):
        track_files.read_tracks_file(path)
    path.write_bytes(b"\xef\xbb\xbf0,0,1,1,5,5\r\n0,1,1,1,5,5\r\n")   # BOM and CRLF
    assert track_files.read_tracks_file(path).tolist() == [[0, 0, 1, 1, 5, 5], [0, 1, 1, 1, 5, 5]]


def test_frame_ids_beyond_num_frames_are_refused(tmp_path):
    (tmp_path / "tracks").mkdir()
    (tmp_path / "det").mkdir()
    write_rows(tmp_path / "tracks" / "v.txt", ["0,0,0,0,9,9"])
    write_rows(tmp_path / "det" / "v.txt", ["0,0,0,9,9,0.5", "1000000000000000,0,0,9,9,0.5"])
    with pytest.raises(EvalInputError, match=r"det/v\.txt:2: frame_id 1000000000000000 beyond "
                                             r"the 10 frames"):
        rbdc.rbdc_tbdc_from_dirs(tmp_path / "tracks", tmp_path / "det", 10)
