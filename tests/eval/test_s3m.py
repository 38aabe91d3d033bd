"""S3M frame scores: the max over the windows predicting each frame."""
import numpy as np

from tvad_jax.data import track_windows as tw
from tvad_jax.eval import s3m as s3m_eval


def test_frame_scores_max_over_windows():
    win = tw.Windows(past=np.zeros((3, 1, 6)), future=np.zeros((3, 2, 6)),
                  frames=np.array([[2, 3], [3, 4], [1, 2]], np.int32),
                  video=np.array([0, 0, 1], np.int32), videos=["a", "b"],
                  num_frames=[6, 4])
    errors = np.array([1.0, 3.0, 2.0])
    scores = s3m_eval.frame_scores(win, errors, error_ref=1.0, future=2)
    # e / (e + 1): 0.5, 0.75, 2/3; frame 3 of "a" is predicted by both windows -> max
    np.testing.assert_allclose(scores["a"], [0, 0, 0.5, 0.75, 0.75, 0], rtol=1e-6)
    np.testing.assert_allclose(scores["b"], [0, 2 / 3, 2 / 3, 0], rtol=1e-6)
