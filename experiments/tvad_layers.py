"""Paper 000's choice of ViT layers for the AHD: which hidden states feed the heatmaps.

    tvad sweep tvad_layers [--seeds 0,1,2] [--only "last layer" ...] [key=value ...]

The paper reads blocks {1, 8, 16, 32} of Qwen2.5-VL's 32 (§3.2.1); as fractions of the depth
that is (1/32, 1/4, 1/2, 1), which on the shipped 4-block tower resolves to blocks (1, 1, 2, 4).
Each row trains stage 1 alone (`variant=no_rae`: the layers change the heatmaps, which are
what the AHD is scored on) with `tvad.model.feature_layers`, on both test splits.
"""
from __future__ import annotations

from tvad_jax.config import register
from tvad_jax.jobs.sweep import Family, Setting

LAYERS = {
    "paper pattern (1/32, 1/4, 1/2, 1)": "0.03125,0.25,0.5,1.0",
    "every block (1/4, 1/2, 3/4, 1)": "0.25,0.5,0.75,1.0",
    "last block": "1.0",
    "middle and last (1/2, 1)": "0.5,1.0",
    "first block": "0.25",
}


@register("tvad_layers", kind="sweep")
def tvad_layers() -> Family:
    return Family(
        name="tvad_layers",
        description="Paper 000 §3.2.1: which ViT layers feed the AHD (the paper's {1, 8, 16, "
                    "32} of 32 as fractions, every block, the last, middle + last, the first)",
        settings=tuple(Setting(name, "tvad", ("tvad.model.variant=no_rae",
                                              f"tvad.model.feature_layers={layers}"))
                       for name, layers in LAYERS.items()),
        splits=("test", "test_seen"),
        metrics=("micro_auc", "macro_auc", "rbdc", "tbdc"))
