"""Experiments: the sweep families (`tvad sweep FAMILY`) and one-off study scripts.

A family module defines a function returning a `tvad_jax.jobs.sweep.Family`, registered with
`@register(NAME, kind="sweep")` in the project's one config registry, and is listed in
`FAMILY_MODULES` so that `tvad sweep` finds it. The study scripts (`probe`, `tvad_stage1`,
`stage1_heads`, `crop_qa`, `oracle_objects`) run with `python -m experiments.<name>`.
"""
from __future__ import annotations

import importlib

FAMILY_MODULES = ("tvad_table4", "tvad_table3", "tvad_layers", "baselines",
                  "local_patterns_table3", "vlavad_table2", "ensemble", "backbones")


def load_families() -> None:
    """Import every family module (registering its families)."""
    for name in FAMILY_MODULES:
        importlib.import_module(f"{__name__}.{name}")
