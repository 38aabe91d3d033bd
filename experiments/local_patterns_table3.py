"""Paper 003 Table 3: which parts of "Local patterns generalize better" carry the detection.

    tvad sweep local_patterns_table3 [--seeds 0,1,2] [--only "full (+ TME)" ...] [key=value ...]

Rows follow the paper's settings (its numbers in brackets: ShanghaiTech micro AUC): the frozen
tower's pooled crop feature alone (1) [71.9]; ITAM's image tokens, stage 1 alone (2) [80.3],
which is also "w/o text tokens" (5) [80.7] here; stages 1 + 2 with the SMM (3) [86.4]; the
caption's sentence feature alone, "w/o image tokens" (4) [79.2]; + TME, the full method (6)
[88.9]; w/o SMM (7) [87.6]; TME alone (8) [84.1]; N_SMM 1 and 5 (9, 10) [88.6, 88.9]. Every
row reads the backbone's pretrained ITAM (the default `local.itam=backbone`); with
`local.itam=train`, every row after the stage-1 one takes that run's ITAM (same seed) instead
of training its own.
"""
from __future__ import annotations

from tvad_jax.config import register
from tvad_jax.jobs.sweep import Family, Setting

STAGE1 = "stage 1: ITAM tokens (= w/o text tokens)"
ROWS = (
    ("backbone features only", ("local.pattern=backbone", "local.motion=false"), ""),
    (STAGE1, ("local.pattern=itam", "local.motion=false"), ""),
    ("stages 1 + 2 (SMM)", ("local.pattern=cmam", "local.motion=false"), STAGE1),
    ("w/o image tokens (caption only)", ("local.pattern=text", "local.motion=false"), STAGE1),
    ("full (+ TME)", ("local.pattern=cmam",), STAGE1),
    ("full w/o SMM", ("local.pattern=cmam", "local.smm=false"), STAGE1),
    ("TME only", ("local.pattern=none",), ""),
    ("full, N_SMM 1", ("local.pattern=cmam", "local.smm_machines=1"), STAGE1),
    ("full, N_SMM 5", ("local.pattern=cmam", "local.smm_machines=5"), STAGE1),
)


@register("local_patterns_table3", kind="sweep")
def local_patterns_table3() -> Family:
    return Family(
        name="local_patterns_table3",
        description="Paper 003 Table 3: local patterns' components (backbone only, stage 1, "
                    "stages 1 + 2 with SMM, caption only, + TME, w/o SMM, TME only, N_SMM 1 "
                    "and 5)",
        settings=tuple(Setting(name, "local_patterns", overrides, reuse=reuse)
                       for name, overrides, reuse in ROWS),
        splits=("test", "test_seen"),
        metrics=("micro_auc", "macro_auc"))
