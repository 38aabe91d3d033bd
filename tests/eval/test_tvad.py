"""`eval.tvad`'s pure helpers (the model-level evaluation is exercised in tests/jobs)."""
import numpy as np
from sklearn.metrics import roc_auc_score

from tvad_jax.eval.tvad import auc_by_type


def test_auc_by_type_pools_each_type_with_every_normal_video():
    rng = np.random.default_rng(0)
    lengths = [6, 5, 7, 4, 8]
    types = ["", "running", "", "wrong_way", "running"]
    scores = [rng.random(n).astype(np.float32) for n in lengths]
    labels = [np.zeros(n, np.uint8) if not t else (rng.random(n) < 0.5).astype(np.uint8)
              for n, t in zip(lengths, types)]
    for lab in labels[1::2]:
        lab[:2] = (0, 1)          # both classes in every abnormal video
    out = auc_by_type(scores, labels, types)
    assert sorted(out) == ["running", "wrong_way"]
    for kind, videos in (("running", [0, 1, 2, 4]), ("wrong_way", [0, 2, 3])):
        expected = roc_auc_score(np.concatenate([labels[v] for v in videos]),
                                 np.concatenate([scores[v] for v in videos]))
        assert abs(out[kind] - expected) < 1e-6, kind
