"""`tvad demo`: the main job on the embedded default."""
from __future__ import annotations

import sys

from tvad_jax.commands.common import add_config_args, config_from_args


def add_parser(subparsers) -> None:
    demo = subparsers.add_parser("demo", help="the whole job on the embedded default")
    add_config_args(demo)
    demo.set_defaults(func=run)


def run(args) -> int:
    from tvad_jax.jobs.demo import run_demo  # deferred: loads only when the command runs

    run_demo(config_from_args(args), report=lambda msg: print(msg, file=sys.stderr))
    return 0
