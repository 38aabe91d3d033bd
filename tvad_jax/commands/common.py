"""Arguments every config-driven command shares: `--config NAME` and `key=value` overrides."""
from __future__ import annotations

import argparse

from tvad_jax import configs  # noqa: F401  (registers the named configs)
from tvad_jax import config as config_lib


def add_config_args(parser: argparse.ArgumentParser, default: str = "default") -> None:
    parser.add_argument("--config", default=default,
                        help=f"named config (default: {default}; see `tvad configs`)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. synth.num_frames=32")


def config_from_args(args: argparse.Namespace):
    return config_lib.resolve(args.config, args.overrides)
