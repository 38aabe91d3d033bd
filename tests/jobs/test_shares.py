"""Per-video tables read in shares: joined in the split's order, whatever the shares hold."""
import dataclasses

import numpy as np

from tvad_jax.jobs.shares import join_shares, read_in_shares


@dataclasses.dataclass
class Table:
    videos: list
    labels: dict
    video: np.ndarray
    frame: np.ndarray
    tokens: np.ndarray
    texts: list
    answers: dict


def table(videos, rows):
    """A table of (video, frame) rows; every other field is a function of the row."""
    video = np.asarray([videos.index(v) for v, _ in rows], np.int64)
    frame = np.asarray([f for _, f in rows], np.int64)
    tokens = (np.stack([np.full((2, 3), f, np.float16) for f in frame]) if rows
              else np.zeros((0, 0, 0), np.float16))        # an empty share's shapeless rows
    return Table(list(videos), {v: np.arange(len(v)) for v in videos}, video, frame, tokens,
                 [f"{v} at {f}" for v, f in rows], {"what": [f"a{f}" for _, f in rows]})


def test_shares_join_in_the_splits_order_and_each_videos_rows_in_order():
    order = ["a", "bb", "ccc", "dddd", "e"]
    rows = [("a", 3), ("a", 1), ("bb", 2), ("dddd", 5), ("dddd", 4), ("e", 7)]
    whole = table(order, rows)
    shares = [table(["bb", "dddd"], [r for r in rows if r[0] in ("bb", "dddd")]),
              table([], []),
              table(["a", "ccc", "e"], [r for r in rows if r[0] in ("a", "ccc", "e")])]
    joined = join_shares(shares, order, ("frame", "tokens", "texts", "answers"))
    assert joined.videos == order
    np.testing.assert_array_equal(joined.video, whole.video)
    np.testing.assert_array_equal(joined.frame, [3, 1, 2, 5, 4, 7])
    np.testing.assert_array_equal(joined.tokens, whole.tokens)
    assert joined.texts == whole.texts and joined.answers == whole.answers
    assert {v: len(x) for v, x in joined.labels.items()} == {v: len(v) for v in order}


def test_one_process_reads_the_whole_split_as_its_one_share(tmp_path):
    order = ["a", "bb"]
    whole = table(order, [("a", 0), ("bb", 1)])
    asked, saved, published = [], [], []

    def read(share):
        asked.append(share)
        return whole

    def save(t, path):
        path.write_text(repr(t.frame.tolist()))
        saved.append(path.name)

    read_in_shares(tmp_path / "work", ".txt", read, save, lambda path: path.read_text(),
                   published.extend)
    assert asked == [(0, 1)] and saved == ["share-0.txt"] and published == ["[0, 1]"]
    assert not (tmp_path / "work").exists()
