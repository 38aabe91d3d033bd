"""`tvad sweep`: run an experiment family's (setting, seed) runs and its mean +- std table.

    tvad sweep --list
    tvad sweep FAMILY [--seeds 0,1,2] [--only SETTING ...] [--config NAME] [--sweep-dir D] \
        [key=value ...]
    tvad sweep FAMILY --dry-run [...]      # the runs and their config overrides, nothing run
    tvad sweep FAMILY --report [...]       # rebuild sweep.json, table.md and the PNGs
    tvad sweep FAMILY --report --readme README.md [...]   # and the README's results section
    tvad sweep FAMILY --parallel-runs [...]   # one of several independent processes

The families are defined in `experiments/<family>.py` (paper-table rows as settings). A sweep
folder (default `<runs_dir>/sweep-<family>`) holds one folder per run; a relaunch of the same
command skips finished runs and resumes the interrupted one from its checkpoint, so a sweep
killed anywhere (even with kill -9) ends with the table of an uninterrupted one. `key=value`
overrides apply to every run after the family's own. `--readme FILE` writes the table, the
command and the runs' total time between the lines `<!-- results:FAMILY -->` and
`<!-- /results:FAMILY -->` of FILE (the README's Results section is made this way).

On several processes: the processes of one job (TVAD_COORDINATOR_ADDRESS, TVAD_NUM_PROCESSES,
TVAD_PROCESS_ID) run every run together over the global mesh (the default); with
`--parallel-runs`, independent processes (no coordinator; each sees its own devices) launched
on the same sweep folder each take the next unclaimed run, so different settings run at once.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tvad_jax import config as config_lib
from tvad_jax.commands.common import output_dir


def add_parser(subparsers) -> None:
    """Add the `sweep` command."""
    parser = subparsers.add_parser("sweep", help="run an experiment family and its table",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", nargs="?", help="family name (see --list)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides for every run (before or after the options), "
                             "e.g. tvad.stage1.train.loop.steps=600")
    parser.add_argument("--list", action="store_true", help="list the families and stop")
    parser.add_argument("--config", default="",
                        help="named base config instead of the family's (e.g. tiny)")
    parser.add_argument("--seeds", type=_seeds, default=(0,),
                        help="comma-separated seeds (default: 0)")
    parser.add_argument("--only", action="append", default=[], metavar="SETTING",
                        help="run only this setting (repeatable; the ones it reuses too)")
    parser.add_argument("--sweep-dir", type=output_dir,
                        help="sweep folder (default: <runs_dir>/sweep-<family>)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the runs and their overrides, run nothing")
    parser.add_argument("--report", action="store_true",
                        help="rebuild the table from the finished runs, run nothing")
    parser.add_argument("--parallel-runs", action="store_true",
                        help="share the sweep folder with other independent processes, each "
                             "running the next unclaimed run on its own devices")
    parser.add_argument("--readme", type=Path, metavar="FILE",
                        help="also write the table and the command into FILE's results "
                             "section for the family (between its results markers)")
    parser.set_defaults(func=run_sweep_command, trailing="overrides")


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers separated by commas, "
                                         f"got {text!r}") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be distinct and >= 0, got {text!r}")
    return seeds


def run_sweep_command(args: argparse.Namespace) -> int:
    import experiments  # deferred: the families import JAX
    from tvad_jax.jobs import sweep as sweep_lib  # deferred: JAX

    experiments.load_families()
    if args.list:
        for name in config_lib.names("sweep"):
            family = config_lib.get(name, "sweep")
            rows = ", ".join(f'"{s.name}"' for s in family.settings)
            print(f"{name}: {family.description}\n    settings: {rows}")
        return 0
    if not args.family or "=" in args.family:
        raise config_lib.ConfigError("name a family first (tvad sweep --list shows them)")
    family = config_lib.get(args.family, "sweep")
    only, overrides, base = tuple(args.only), tuple(args.overrides), args.config
    if args.dry_run:
        for run in sweep_lib.plan_runs(family, args.seeds, only, overrides, base):
            print(json.dumps({"run": run.folder, "setting": run.setting.name,
                              "method": run.setting.method, "config": base or family.config,
                              "overrides": list(run.overrides)}))
        return 0
    if args.report:
        runs = sweep_lib.plan_runs(family, args.seeds, only, overrides, base)
        folder = sweep_lib.sweep_folder(family, runs, args.sweep_dir)
    else:
        folder = sweep_lib.run_sweep(family, args.seeds, only, overrides, args.sweep_dir, base,
                                     parallel_runs=args.parallel_runs)
    summary = sweep_lib.aggregate(family, folder, report=lambda msg: None)
    if args.readme:
        sweep_lib.write_readme_section(args.readme, family, sweep_lib.readme_section(
            family, summary, _command(args)))
    print(sweep_lib.table_markdown(family, summary["table"]))
    print(folder)
    return 0


def _command(args: argparse.Namespace) -> str:
    """The `tvad sweep` command line that runs these runs (without --report / --readme)."""
    parts = ["tvad sweep", args.family, "--seeds", ",".join(map(str, args.seeds))]
    parts += [f'--only "{name}"' for name in args.only]
    parts += [f"--config {args.config}"] if args.config else []
    return " ".join(parts + list(args.overrides))
