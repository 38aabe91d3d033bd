"""The detectors without a vision-language model: frame difference and the box-track S3M.

    tvad sweep baselines [--seeds 0,1,2] [--only "S3M (boxes)" ...] [key=value ...]

Frame difference (raw motion energy, no training) at three temporal smoothings, and paper
004's S3M on the simulator's object boxes (VLAVAD's predictor without its answer embeddings)
without and with smoothing (one trained model per seed, scored both ways), on the open-set
and closed-set splits.
"""
from __future__ import annotations

from tvad_jax.config import register
from tvad_jax.jobs.sweep import Family, Setting


@register("baselines", kind="sweep")
def baselines() -> Family:
    return Family(
        name="baselines",
        description="Baselines: frame difference (sigma 0, 3, 10) and the box-track S3M "
                    "of paper 004 (sigma 0, 3)",
        settings=(
            Setting("frame difference", "frame_difference", seeded=False),
            Setting("frame difference, sigma 3", "frame_difference", seeded=False, sigma=3.0),
            Setting("frame difference, sigma 10", "frame_difference", seeded=False,
                    sigma=10.0),
            Setting("S3M (boxes)", "s3m"),
            Setting("S3M (boxes), sigma 3", "s3m", sigma=3.0, reuse="S3M (boxes)"),
        ),
        splits=("test", "test_seen"))
