"""Which backbone T-VAD stands on: the shipped backbone (v9: v5's 1400 pretraining steps on
the corpus, then four continuations of 600 steps with the dense attributes weighted 4, 8, 16
and 32x), the recipe for 100 steps on the `train` split (what `tvad pretrain --config
pretrain-quick` makes) and the same architecture with random weights (no pretraining at all),
each under T-VAD's stage 1 and stage 2.

    tvad sweep backbones [--seeds 0,1,2] [--only "random init" ...] [key=value ...]

The quick backbone is pretrained once per sweep (about 10 minutes here), the random one is
initialized once (seed 0); the seeds vary T-VAD's training. Paper 000 reports its method on
one pretrained backbone; this family asks how much of what T-VAD shows comes from
pretraining.
"""
from __future__ import annotations

from tvad_jax.config import register
from tvad_jax.jobs.sweep import Family, Setting

QUICK_STEPS = 100     # pretrain-quick's steps (the shipped backbone took 1400 + 4 x 600)


@register("backbones", kind="sweep")
def backbones() -> Family:
    return Family(
        name="backbones",
        description="Backbones under T-VAD (paper 000's method): the shipped one vs the quick "
                    f"{QUICK_STEPS}-step pretraining vs random weights",
        settings=(
            Setting("shipped", "tvad"),
            Setting(f"pretrained {QUICK_STEPS} steps", "tvad",
                    (f"pretrain.train.loop.steps={QUICK_STEPS}", "pretrain.split=train"),
                    backbone="pretrained"),
            Setting("random init", "tvad", backbone="random"),
        ),
        splits=("test", "test_seen"),
        metrics=("micro_auc", "rbdc", "tbdc", "yes_no_balanced_accuracy", "bleu4_trajectory"))
