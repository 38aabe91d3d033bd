"""`eval.tvad`'s pure helpers (the model-level evaluation is exercised in tests/jobs)."""
import numpy as np

from tvad_jax.data.pipeline import open_split
from tvad_jax.eval.tvad import RegionScorer


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
