"""`tvad pretrain [--ship] [--itam [--install]] [--run-dir DIR]`: pretrain the default backbone
on the synthetic benchmark, or a backbone's ITAM for paper 003's detector (an interrupted run
resumes from its checkpoint when given its folder again)."""
from __future__ import annotations

import sys
from pathlib import Path

from tvad_jax.commands.common import add_config_args, config_from_args
from tvad_jax.config import ConfigError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain", help="pretrain the small default backbone on the synthetic benchmark")
    add_config_args(parser)
    parser.add_argument("--ship", action="store_true",
                        help="the shipped recipe: this config's run, then its continuations "
                             "(jobs.pretrain.SHIPPED_CONTINUATIONS), the last installed as the "
                             "package's default backbone")
    parser.add_argument("--itam", action="store_true",
                        help="pretrain the ITAM of the backbone local.backbone (else "
                             "tvad.backbone) on the corpus's object crops instead "
                             "(paper 003's Q-Former; jobs.pretrain.pretrain_itam)")
    parser.add_argument("--install", action="store_true",
                        help="with --itam: also write it into that backbone's folder (itam/), "
                             "where local.itam=backbone reads it")
    parser.add_argument("--run-dir", type=Path,
                        help="train into (or resume) this folder instead of a new one under "
                             "runs_dir")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tvad_jax.jobs import pretrain as jobs  # deferred: loads on use

    if args.install and not args.itam:
        raise ConfigError("tvad pretrain: --install goes with --itam (--ship installs the "
                          "backbone)")
    if args.itam and args.ship:
        raise ConfigError("tvad pretrain: --ship makes the shipped backbone's ITAM itself; "
                          "--itam is for another backbone or recipe")
    report = lambda msg: print(msg, file=sys.stderr)    # noqa: E731
    cfg = config_from_args(args)
    if args.itam:
        run_dir = jobs.pretrain_itam(cfg, report, args.run_dir, install=args.install)
    else:
        job = jobs.pretrain_shipped if args.ship else jobs.pretrain
        run_dir = job(cfg, run_dir=args.run_dir, report=report)
    print(run_dir)
    return 0
