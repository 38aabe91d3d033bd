"""Paper 000 Table 4: T-VAD's ablations on the open-set and closed-set splits.

    tvad sweep tvad_table4 [--seeds 0,1,2] [--only "w/o AHD" ...] [key=value ...]

Rows: the full model; w/o RAE (its heatmaps only: the full run's AHD, no dialogue); w/o AHD
(stage 2 without anomaly prompts); w/o both (the frozen backbone, zero-shot). The w/o-RAE
row reuses the full run's stage 1 of the same seed, so it costs no training.
"""
from __future__ import annotations

from tvad_jax.config import register
from tvad_jax.jobs.sweep import Family, Setting


@register("tvad_table4", kind="sweep")
def tvad_table4() -> Family:
    return Family(
        name="tvad_table4",
        description="Paper 000 Table 4: T-VAD ablations (full, w/o RAE, w/o AHD, w/o both)",
        settings=(
            Setting("T-VAD", "tvad", ("tvad.model.variant=full",)),
            Setting("w/o RAE", "tvad", ("tvad.model.variant=no_rae",), reuse="T-VAD"),
            Setting("w/o AHD", "tvad", ("tvad.model.variant=no_ahd",)),
            Setting("w/o AHD & RAE", "tvad_plain", seeded=False),
        ),
        splits=("test", "test_seen"),
        metrics=("micro_auc", "rbdc", "tbdc", "yes_no_balanced_accuracy", "bleu4_target",
                 "bleu4_trajectory"))
