"""`tvad data synth | prepare` and `tvad configs`."""
from __future__ import annotations

import json
import sys

from tvad_jax import config as config_lib
from tvad_jax.commands.common import add_config_args, config_from_args


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="build the synthetic benchmark, prepare shards")
    commands = data.add_subparsers(dest="data_command", required=True)
    synth = commands.add_parser("synth", help="render the synthetic surveillance benchmark")
    add_config_args(synth)
    synth.add_argument("--force", action="store_true", help="rebuild even if up to date")
    synth.set_defaults(func=run_synth)
    prepare = commands.add_parser("prepare", help="write ArrayRecord shards (+ annotations)")
    add_config_args(prepare)
    prepare.add_argument("--skip-bad", action="store_true",
                         help="report unreadable videos and go on (= prepare.skip_bad=true)")
    prepare.set_defaults(func=run_prepare)
    configs = subparsers.add_parser("configs", help="list named configs or print one")
    configs.add_argument("name", nargs="?", help="print this config resolved")
    configs.add_argument("overrides", nargs="*", metavar="key=value")
    configs.set_defaults(func=run_configs)


def run_synth(args) -> int:
    # Imports deferred: the command's heavy modules load only when it runs.
    from tvad_jax.data.synthetic.generate import is_complete, synthesize
    from tvad_jax.runs import progress

    cfg = config_from_args(args)
    if is_complete(cfg.synth) and not args.force:
        print(f"[tvad] synthetic benchmark up to date in {cfg.synth.out_dir}", file=sys.stderr)
        return 0
    manifest = synthesize(cfg.synth, lambda it, total: progress(it, "synth", total, "video"))
    print(f"[tvad] synthetic benchmark written to {manifest.parent} (manifest: {manifest})",
          file=sys.stderr)
    return 0


def run_prepare(args) -> int:
    from tvad_jax.data.prepare import prepare  # deferred: loads only when the command runs

    cfg = config_from_args(args)
    if args.skip_bad:
        cfg = config_lib.apply_overrides(cfg, ["prepare.skip_bad=true"])
    out = prepare(cfg, report=lambda msg: print(msg, file=sys.stderr))
    print(f"[tvad] prepared shards in {out}", file=sys.stderr)
    return 0


def run_configs(args) -> int:
    if args.name is None:
        print("\n".join(config_lib.names()))
    else:
        cfg = config_lib.resolve(args.name, args.overrides)
        print(json.dumps(config_lib.to_dict(cfg), indent=2, sort_keys=True))
    return 0
