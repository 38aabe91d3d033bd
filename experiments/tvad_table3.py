"""Paper 000 Table 3: the frozen backbone zero-shot and one-shot against T-VAD, on the dialogue.

    tvad sweep tvad_table3 [--seeds 0,1,2] [key=value ...]

The backbone rows follow the table's protocol (one annotated training video and its
reference dialogue before each test video for one-shot) and need no training, so they run
once; T-VAD trains per seed.
"""
from __future__ import annotations

from tvad_jax.config import register
from tvad_jax.jobs.sweep import Family, Setting


@register("tvad_table3", kind="sweep")
def tvad_table3() -> Family:
    return Family(
        name="tvad_table3",
        description="Paper 000 Table 3: the backbone zero-shot and one-shot vs T-VAD",
        settings=(
            Setting("backbone zero-shot", "tvad_plain", seeded=False),
            Setting("backbone one-shot", "tvad_plain", seeded=False, one_shot=True),
            Setting("T-VAD", "tvad", ("tvad.model.variant=full",)),
        ),
        metrics=("yes_no_accuracy", "yes_no_balanced_accuracy", "bleu4_target",
                 "bleu4_trajectory"))
