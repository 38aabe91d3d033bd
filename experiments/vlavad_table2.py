"""Paper 004 Table 2: kNN on visual features against SPA, S3M against a Transformer and an RNN
of the same width and depth, and the fusion against each half.

    tvad sweep vlavad_table2 [--seeds 0,1,2] [--only "SPA + RNN" ...] [key=value ...]

Rows: VLAVAD (SPA + S3M, lambda 0.1; the paper's full model); its halves read from the same
run (SPA alone, S3M on the answers alone) and Table 2's kNN (k = 1 on the frozen tower's pooled
crop feature); SPA fused with a Transformer and with an RNN predictor, and those predictors
alone; the fusion with lambda 1; SPA's rule as printed, without setting aside the prompts
whose answers take at most k values (on the synthetic benchmark every class answers the pose
question the same way on normal videos, so the printed rule picks it); and the full model on
tracks that the IoU tracker recovers from noisy detections instead of the simulator's exact
tracks. Every row but the last reads the full run's answers from the answer cache, and so
does every seed: the backbone answers once for the exact tracks and once per seed for the
tracker's (its noisy detections are seeded).
"""
from __future__ import annotations

from tvad_jax.config import register
from tvad_jax.jobs.sweep import Family, Setting

FULL = "SPA + S3M (VLAVAD)"
TRANSFORMER = "SPA + Transformer"
RNN = "SPA + RNN"
ROWS = (   # (row, overrides, reused setting, score)
    (FULL, (), "", "vlavad"),
    ("kNN on visual features", (), FULL, "knn_visual"),
    ("SPA", (), FULL, "spa"),
    ("S3M on answers", (), FULL, "s3m_answers"),
    (TRANSFORMER, ("vlavad.predictor=transformer",), FULL, "vlavad"),
    ("Transformer on answers", ("vlavad.predictor=transformer",), TRANSFORMER, "s3m_answers"),
    (RNN, ("vlavad.predictor=rnn",), FULL, "vlavad"),
    ("RNN on answers", ("vlavad.predictor=rnn",), RNN, "s3m_answers"),
    ("SPA + S3M, lambda 1", ("vlavad.weight=1",), FULL, "vlavad"),
    ("SPA + S3M, the paper's prompt rule", ("vlavad.skip_saturated=false",), FULL,
     "vlavad"),
    ("SPA + S3M on tracker tracks", ("vlavad.tracks=tracker",), "", "vlavad"),
)


@register("vlavad_table2", kind="sweep")
def vlavad_table2() -> Family:
    return Family(
        name="vlavad_table2",
        description="Paper 004 Table 2: kNN vs SPA, S3M vs Transformer vs RNN, fusion vs "
                    "each half (+ lambda 1, the paper's prompt rule, the tracker over noisy "
                    "detections)",
        settings=tuple(Setting(name, "vlavad", overrides, reuse=reuse, score=score)
                       for name, overrides, reuse, score in ROWS),
        splits=("test", "test_seen"),
        metrics=("micro_auc", "macro_auc"))
