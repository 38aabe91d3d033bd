"""The three detectors of the seed papers and their fusion: T-VAD's heatmap decoder (paper 000),
local patterns (paper 003) and VLAVAD (paper 004), each alone and fused.

    tvad sweep ensemble [--seeds 0,1,2] [--only ensemble ...] [key=value ...]

Each detector trains with its defaults (T-VAD's stage 1 only: its frame scores are the AHD's
heatmaps, as in Table 4's w/o-RAE row). The ensemble row min-max normalizes each detector's
frame scores per video (paper 004's fusion), sums them with the weights (multiples of 0.1,
summing to 1) that give the best frame micro AUC on the `val` split (whose anomaly types are
neither the training nor the test types), smooths the sum (sigma 3) and reports the chosen
weights beside its AUCs in `sweep.json`. Frame difference is the reference row.
"""
from __future__ import annotations

from tvad_jax.config import register
from tvad_jax.jobs.sweep import Family, Setting

DETECTORS = ("T-VAD (AHD)", "Local patterns", "VLAVAD")


@register("ensemble", kind="sweep")
def ensemble() -> Family:
    return Family(
        name="ensemble",
        description="Papers 000, 003 and 004 fused: the AHD, local patterns and VLAVAD, "
                    "alone and as a per-video min-max ensemble weighted on val",
        settings=(
            Setting("frame difference", "frame_difference", seeded=False),
            Setting(DETECTORS[0], "tvad", ("tvad.model.variant=no_rae",)),
            Setting(DETECTORS[1], "local_patterns"),
            Setting(DETECTORS[2], "vlavad"),
            Setting("ensemble", "ensemble", sigma=3.0, members=DETECTORS),
        ),
        splits=("test", "test_seen"))
