"""`eval.tvad`'s pure helpers (the model-level evaluation is exercised in tests/jobs)."""
import numpy as np
from sklearn.metrics import roc_auc_score

from tvad_jax.data.pipeline import open_split
from tvad_jax.eval.tvad import RegionScorer, auc_by_type


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


def test_region_scorer_scores_against_the_annotated_tracks(tiny_prepared):
    # Heat 1 inside every annotated box of every abnormal object, 0 elsewhere: each region is
    # exactly an annotated box, so every region and track is found with no false positive.
    # (Tracks re-derived from the binary masks would split an occluded object into several.)
    cfg, prepared = tiny_prepared
    source, lengths = open_split(prepared, "test")
    maps = []
    for v, n in enumerate(lengths):
        record = source[v]
        heat = np.zeros(np.asarray(record["masks"]).shape, np.float32)
        for _, frame, x0, y0, x1, y1 in np.asarray(record["tracks"]).reshape(-1, 6):
            heat[frame, y0:y1 + 1, x0:x1 + 1] = 1.0
        maps.append(heat)
    scorer = RegionScorer(prepared, "test", lengths)
    result = scorer(maps)
    assert result.num_tracks == sum(len(np.unique(np.asarray(source[v]["tracks"])[:, 0]))
                                    for v in range(len(lengths))) > 0
    assert result.rbdc == result.tbdc == 1.0
