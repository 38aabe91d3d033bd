"""Arguments commands share: `--config NAME`, `key=value` overrides and checked numbers."""
from __future__ import annotations

import argparse
from pathlib import Path

from tvad_jax import configs  # noqa: F401  (registers the named configs)
from tvad_jax import config as config_lib
from tvad_jax.data.files import check_output_dir
from tvad_jax.errors import DataError
from tvad_jax.jobs.common import use_kernels


def add_config_args(parser: argparse.ArgumentParser, default: str = "default") -> None:
    parser.add_argument("--config", default=default,
                        help=f"named config (default: {default}; see `tvad configs`)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. synth.num_frames=32")


def config_from_args(args: argparse.Namespace):
    """The resolved config; its kernel choices become the process's (`jobs.common.use_kernels`)."""
    cfg = config_lib.resolve(args.config, args.overrides)
    use_kernels(cfg)
    return cfg


def number_at_least(minimum: float, kind: type = int):
    """An argparse `type`: a finite `kind` >= `minimum`, so that a bad value (-1, 0, nan) is
    a usage error naming the option before anything runs."""

    def parse(text: str):
        try:
            return config_lib.at_least(kind(text), minimum)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def output_dir(text: str) -> Path:
    """An argparse `type`: a folder that outputs can go into (`check_output_dir`), so that a
    file or unwritable path is a usage error before anything runs."""
    try:
        return check_output_dir(text)
    except DataError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
