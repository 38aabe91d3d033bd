"""Ablation sweeps: an experiment family's (setting, seed) runs in one sweep folder, and the
paper-style table of their mean +- std.

    family = config_lib.get("tvad_table4", kind="sweep")   # families live in experiments/
    sweep_dir = run_sweep(family, seeds=(0, 1, 2))          # skips finished runs, resumes
    aggregate(family, sweep_dir)                            # sweep.json, table.md, PNGs

A family is a base config plus one `Setting` per table row: which method runs, its config
overrides and options. Each (setting, seed) is a run folder `<sweep>/<setting>/seed<k>`
(`once` for unseeded settings) holding `run.json` (the run's resolved config and setting:
a relaunch with a different definition is refused rather than mixed), the method's own run
(`run/`: checkpoints, metrics, the exported model) and, when finished, `result.json`. That
file is written atomically last, so its presence is what "finished" means: a relaunch
skips finished runs and reruns the others into the same folders, where the engine resumes
from the last checkpoint; after a kill -9 anywhere no finished run is computed again and
none is lost. What several runs need is shared: the benchmark, its shards and the feature
caches (keyed by their inputs), and trained models (`Setting.reuse`: a T-VAD setting takes
the AHD of another setting's run with the same seed, an S3M setting evaluates its model).

Multi-host, two ways. By default every process of the job (TVAD_COORDINATOR_ADDRESS & co.)
runs the same runs in the same order over the global mesh (one run at a time on all devices);
process 0 writes the results and the table. With `parallel_runs`, independent processes
(each its own JAX runtime over its own devices: a host, or a device subset chosen with
CUDA_VISIBLE_DEVICES / TPU_VISIBLE_CHIPS) share the sweep folder and each takes the next
unclaimed run: a run is claimed by an OS lock on its folder, held while it runs and released
when its process ends, even by kill -9, so no run is computed twice and a relaunch with any
number of processes picks up the rest. A run that reuses another setting's model, or fuses
other settings' scores (an ensemble), waits for them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from tvad_jax import config as config_lib
from tvad_jax.config import ConfigError
from tvad_jax.data.files import check_output_dir, waiting_lock, write_text_atomic
from tvad_jax.errors import DataError
from tvad_jax.eval.baselines import baseline_scores
from tvad_jax.eval.fusion import ENSEMBLE_VALIDATION, choose_weights, fuse
from tvad_jax.eval.metrics import frame_auc
from tvad_jax.eval.report import plot_bars
from tvad_jax.eval.tvad import ahd_frame_scores, evaluate_model
from tvad_jax.jobs.common import Report, ensure_prepared, use_kernels
from tvad_jax.jobs.config import Config
from tvad_jax.jobs.local_patterns import (evaluate_local_patterns_run, local_patterns_scores,
                                          train_local_patterns)
from tvad_jax.jobs.pretrain import pretrain, random_backbone
from tvad_jax.jobs.s3m import evaluate_run, train_s3m
from tvad_jax.jobs.tvad import train_tvad
from tvad_jax.jobs.vlavad import evaluate_vlavad_run, train_vlavad, vlavad_aucs, vlavad_scores
from tvad_jax.models.tvad import load_frozen_backbone, load_model, plain_model
from tvad_jax.runs import progress
from tvad_jax.train import distributed

RESULT, RUN = "result.json", "run.json"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of a family's table.

    Attributes:
      name: the row label (its run folders use a slug of it).
      method: "tvad" (train T-VAD, evaluate its model), "tvad_plain" (the frozen backbone's
        dialogue, no training), "s3m" (the box-track S3M), "local_patterns" (paper 003's
        detector), "vlavad" (paper 004's detector), "frame_difference" or "ensemble" (the
        members' frame scores fused, weights chosen on the validation split).
      overrides: key=value on the family's config.
      seeded: False for a method without randomness (run once, reported with n = 1).
      reuse: the earlier setting whose run with the same seed lends its trained model:
        "tvad" takes its AHD (stage 1; e.g. w/o RAE from the full model), "s3m" evaluates
        its S3M (e.g. another smoothing), "local_patterns" takes its trained ITAM,
        "vlavad" scores its run with this row's scoring when only the scoring differs
        (score, weight, sigma, normalization) and otherwise trains anew (the answers come
        from the answer cache every VLAVAD run shares, `jobs.vlavad.answers_path`).
      one_shot: ("tvad", "tvad_plain") the dialogue with the in-context example (Table 3).
      sigma: ("s3m", "frame_difference") temporal smoothing of the frame scores.
      score: ("vlavad") which of the run's scores the row reports: "vlavad" (the fusion),
        "spa", "s3m_answers" (the predictor alone) or "knn_visual" (Table 2's kNN).
      backbone: ("tvad") "" (the config's `tvad.backbone`), "random" (that backbone's
        architecture and tokenizers with freshly initialized weights, seed 0) or "pretrained"
        (a backbone pretrained by `tvad pretrain` with the run's `pretrain.*` config, e.g.
        fewer steps); either is made once per setting, in `<setting>/backbone-<kind>`.
      members: ("ensemble") the earlier settings (tvad, local_patterns or vlavad, not
        reusing another's model) whose same-seed runs' frame scores are fused: each
        min-max normalized per video, summed with the weights (multiples of 0.1 summing
        to 1) that give the best micro AUC on `ENSEMBLE_VALIDATION`; `sigma` smooths the sum.
    """

    name: str
    method: str
    overrides: tuple[str, ...] = ()
    seeded: bool = True
    reuse: str = ""
    one_shot: bool = False
    sigma: float = 0.0
    score: str = "vlavad"
    backbone: str = ""
    members: tuple[str, ...] = ()

    def __post_init__(self):
        config_lib.check_choice(self, "method", tuple(METHODS))
        config_lib.check_choice(self, "score", VLAVAD_SCORES)
        config_lib.check_choice(self, "backbone", BACKBONES)
        if self.backbone and (self.method != "tvad" or self.reuse):
            raise ConfigError(f"setting {self.name!r}: a backbone of its own is for a tvad "
                              "setting that reuses no other's model")
        if (self.method == "ensemble") != bool(self.members):
            raise ConfigError(f"setting {self.name!r}: an ensemble, and only an ensemble, "
                              "names its members")
        if self.reuse and self.method not in ("tvad", "s3m", "local_patterns", "vlavad"):
            raise ConfigError(f"setting {self.name!r}: only tvad, s3m, local_patterns and "
                              "vlavad runs can reuse another setting's model")


@dataclasses.dataclass(frozen=True)
class Family:
    """An experiment family: the rows of one paper table.

    Attributes:
      name: what `tvad sweep` calls it.
      description: one line, naming the paper table it mirrors.
      settings: the rows, in table order (a `reuse` setting after the one it names).
      config: the registered base config; overrides: applied to it first.
      splits, metrics: the table's columns (split x metric; a metric a method does not
        produce shows "–").
    """

    name: str
    description: str
    settings: tuple[Setting, ...]
    config: str = "default"
    overrides: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("test",)
    metrics: tuple[str, ...] = ("micro_auc", "macro_auc")

    def __post_init__(self):
        names = [s.name for s in self.settings]
        slugs = [slug(n) for n in names]
        if len(set(slugs)) != len(slugs):
            raise ConfigError(f"family {self.name}: settings {names} share a folder name")
        for i, s in enumerate(self.settings):
            if s.reuse and s.reuse not in names[:i]:
                raise ConfigError(f"family {self.name}: {s.name!r} reuses {s.reuse!r}, "
                                  "which must be an earlier setting")
            if s.reuse and (self.setting(s.reuse).method, self.setting(s.reuse).seeded) != (
                    s.method, s.seeded):
                raise ConfigError(f"family {self.name}: {s.name!r} reuses {s.reuse!r}, a "
                                  "setting of another method or seeding")
            for m in s.members:
                member = self.setting(m) if m in names[:i] else None
                if (member is None or member.method not in ENSEMBLE_MEMBERS or member.reuse
                        or not member.seeded or not s.seeded):
                    raise ConfigError(f"family {self.name}: ensemble {s.name!r} fuses {m!r}, "
                                      "which must be an earlier seeded setting of "
                                      f"{'/'.join(ENSEMBLE_MEMBERS)} that reuses nothing")

    def setting(self, name: str) -> Setting:
        for s in self.settings:
            if s.name == name:
                return s
        raise ConfigError(f"family {self.name} has no setting {name!r}; it has "
                          f"{', '.join(repr(s.name) for s in self.settings)}")


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One (setting, seed) of a sweep with its resolved config."""

    setting: Setting
    seed: int | None            # None: an unseeded setting, run once
    config: Config
    overrides: tuple[str, ...]  # everything applied to the family's base config

    @property
    def folder(self) -> str:
        return f"{slug(self.setting.name)}/{'once' if self.seed is None else f'seed{self.seed}'}"


def slug(name: str) -> str:
    """A folder name for a setting name ("w/o RAE" -> "w-o-RAE")."""
    return re.sub(r"[^A-Za-z0-9_.+]+", "-", name).strip("-") or "setting"


# Per method: the config keys a seed sets.
SEED_KEYS = {
    "tvad": ("tvad.stage1.train.loop.seed", "tvad.stage2.phase_a.loop.seed",
             "tvad.stage2.phase_b.loop.seed"),
    "s3m": ("s3m.train.loop.seed", "s3m.data_seed"),
    "local_patterns": ("local.itam_train.loop.seed", "local.smm_train.loop.seed",
                       "local.rm_train.loop.seed", "local.data_seed"),
    "vlavad": ("vlavad.train.loop.seed", "vlavad.data_seed"),
}
VLAVAD_SCORES = ("vlavad", "spa", "s3m_answers", "knn_visual")
ENSEMBLE_MEMBERS = ("tvad", "local_patterns", "vlavad")
BACKBONES = ("", "random", "pretrained")


def plan_runs(family: Family, seeds: tuple[int, ...], only: tuple[str, ...] = (),
              overrides: tuple[str, ...] = (), config: str = "") -> list[PlannedRun]:
    """The sweep's runs in order: per seed, the settings in table order (unseeded ones once,
    with the first seed). `only` keeps some settings (plus the ones they reuse);
    `overrides` apply after the family's own; `config` replaces the family's base config
    (e.g. "tiny")."""
    if not seeds:
        raise ConfigError("a sweep needs at least one seed")
    keep = {family.setting(name).name for name in only} or {s.name for s in family.settings}
    needed = list(keep)
    while needed:
        setting = family.setting(needed.pop())
        for name in (setting.reuse, *setting.members):
            if name and name not in keep:
                keep.add(name)
                needed.append(name)
    runs = []
    for k, seed in enumerate(seeds):
        for setting in family.settings:
            if setting.name not in keep or (not setting.seeded and k):
                continue
            seed_overrides = [f"{key}={seed}" for key in SEED_KEYS.get(setting.method, ())
                              ] if setting.seeded else []
            applied = (*family.overrides, *setting.overrides, *seed_overrides, *overrides)
            runs.append(PlannedRun(setting, seed if setting.seeded else None,
                                   config_lib.resolve(config or family.config, list(applied)),
                                   applied))
    return runs


def run_sweep(family: Family, seeds: tuple[int, ...], only: tuple[str, ...] = (),
              overrides: tuple[str, ...] = (), sweep_dir: str | Path | None = None,
              config: str = "", report: Report = print, parallel_runs: bool = False,
              poll_s: float = 5.0) -> Path:
    """Run every unfinished run of the sweep (`plan_runs`), then write its table; returns
    the sweep folder (`<runs_dir>/sweep-<family>` by default, so a relaunch finds it).
    `parallel_runs`: this process is one of several independent ones sharing the folder
    (see the module docstring); it polls every `poll_s` s for runs others hold."""
    runs = plan_runs(family, seeds, only, overrides, config)
    base = runs[0].config
    if parallel_runs and distributed.configured():
        raise ConfigError("--parallel-runs starts independent processes that share the sweep "
                          "folder; unset TVAD_COORDINATOR_ADDRESS & co. (they join the "
                          "processes into one job, which is the default mode)")
    if not parallel_runs:
        distributed.initialize()      # on a pod: from TVAD_COORDINATOR_ADDRESS & co.
    sweep_dir = sweep_folder(family, runs, sweep_dir)
    check_output_dir(sweep_dir)
    for run in runs:                   # every refusal before any run starts
        _check_run_folder(sweep_dir / run.folder, run)
    with _waiting_lock(sweep_dir, parallel_runs):
        if jax.process_index() == 0:   # one writer of the shared benchmark and shards
            ensure_prepared(base, report)
    distributed.barrier("sweep-prepared")
    todo = [r for r in runs if not _finished(sweep_dir, r)]
    report(f"[tvad] sweep {family.name}: {len(runs)} runs, {len(runs) - len(todo)} finished, "
           f"in {sweep_dir}")
    if parallel_runs:
        _run_claimed(family, todo, sweep_dir, report, poll_s)
    else:
        for run in progress(todo, f"sweep {family.name}", len(todo), "run"):
            _execute(family, run, sweep_dir, report)
    with _waiting_lock(sweep_dir, parallel_runs):
        aggregate(family, sweep_dir, report)
    distributed.barrier("sweep-done")  # no process leaves while another still writes
    return sweep_dir


def _finished(sweep_dir: Path, run: PlannedRun) -> bool:
    return (sweep_dir / run.folder / RESULT).is_file()


def _execute(family: Family, run: PlannedRun, sweep_dir: Path, report: Report) -> None:
    """Run one (setting, seed) into its folder; result.json is written last, atomically."""
    folder = sweep_dir / run.folder
    report(f"[tvad] sweep {family.name}: {run.folder}")
    _write_json(folder / RUN, _run_record(run))
    start = time.perf_counter()
    use_kernels(run.config)
    metrics = METHODS[run.setting.method](run, folder, sweep_dir, family.splits, report)
    _write_json(folder / RESULT, {"setting": run.setting.name, "seed": run.seed,
                                  "metrics": metrics,
                                  "wall_s": round(time.perf_counter() - start, 1),
                                  "host": f"{socket.gethostname()}:{os.getpid()}"})


def _run_claimed(family: Family, todo: list[PlannedRun], sweep_dir: Path, report: Report,
                 poll_s: float) -> None:
    """`parallel_runs`: pass over the runs, running each one this process can claim and whose
    prerequisites have finished, until every run is finished (here or elsewhere)."""
    pending = list(todo)
    bar = progress(None, f"sweep {family.name} (runs finished anywhere)", len(todo), "run")
    while pending:
        ran = False
        for run in list(pending):
            if not _finished(sweep_dir, run) and all(
                    (sweep_dir / f / RESULT).is_file() for f in _prerequisites(run)):
                with _claim(sweep_dir / run.folder) as mine:
                    if mine and not _finished(sweep_dir, run):
                        _execute(family, run, sweep_dir, report)
                        ran = True
            if _finished(sweep_dir, run):
                pending.remove(run)
                bar.update(1)
        if pending and not ran:
            time.sleep(poll_s)         # the rest are held by other processes
    bar.close()


@contextlib.contextmanager
def _claim(folder: Path):
    """Yields whether this process holds the run folder's lock (taken without waiting; the
    OS drops it when the process dies)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".claim.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


@contextlib.contextmanager
def _waiting_lock(folder: Path, held: bool):
    """With `held`, wait for the folder's lock (one process at a time prepares the benchmark,
    writes the table or makes a setting's backbone); otherwise nothing."""
    if not held:
        yield
        return
    with waiting_lock(folder / ".folder.lock"):
        yield


def sweep_folder(family: Family, runs: list[PlannedRun], sweep_dir: str | Path | None = None
                 ) -> Path:
    """`sweep_dir`, or the family's default `<runs_dir>/sweep-<family>` (fixed, so that a
    relaunch finds its runs)."""
    return Path(sweep_dir or Path(runs[0].config.runs_dir) / f"sweep-{family.name}")


def _run_record(run: PlannedRun) -> dict:
    return {"setting": dataclasses.asdict(run.setting), "seed": run.seed,
            "overrides": list(run.overrides), "config": config_lib.to_dict(run.config)}


def _check_run_folder(folder: Path, run: PlannedRun) -> None:
    """A run folder from an earlier launch must hold this very run."""
    path = folder / RUN
    if path.is_file() and json.loads(path.read_text()) != json.loads(
            json.dumps(_run_record(run))):
        raise ConfigError(f"{path}: this run folder holds another definition of "
                          f"{run.folder} (the family, its overrides or the code's config "
                          "changed); remove it or sweep into another --sweep-dir")


def _write_json(path: Path, data: dict) -> None:
    """Write a JSON file atomically (process 0 only, in a multi-process run)."""
    if jax.process_index() != 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Methods: (run, its folder, the sweep folder, splits, report) -> {split: {metric: value}}

def _scalars(results: dict) -> dict:
    return {k: float(v) for k, v in results.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _prerequisites(run: PlannedRun) -> list[str]:
    """The run folders (relative to the sweep) that must finish before `run` starts: the
    one it reuses a model of and the ensemble's members."""
    seed = Path(run.folder).name
    return [f"{slug(name)}/{seed}" for name in (run.setting.reuse, *run.setting.members)
            if name]


def _lender(run: PlannedRun, sweep_dir: Path) -> Path | None:
    """The method run folder of the setting this run reuses (same seed), or None."""
    if not run.setting.reuse:
        return None
    return sweep_dir / slug(run.setting.reuse) / Path(run.folder).name / "run"


def _tvad(run: PlannedRun, folder: Path, sweep_dir: Path, splits, report) -> dict:
    lender = _lender(run, sweep_dir)
    cfg = _with_backbone(run, folder.parent, report)
    model = load_model(train_tvad(cfg, folder / "run",
                                  stage1_from=lender / "model" if lender else None,
                                  report=report))
    return {split: _scalars(evaluate_model(model, cfg, split, run.setting.one_shot,
                                           report=report)) for split in splits}


def _with_backbone(run: PlannedRun, setting_dir: Path, report) -> Config:
    """The run's config with `tvad.backbone` set to the setting's own backbone (made here
    by the first run that needs it, the others waiting), or unchanged."""
    kind = run.setting.backbone
    if not kind:
        return run.config
    with _waiting_lock(setting_dir, True):
        if kind == "random":
            path = setting_dir / "backbone-random"
            if not (path / "config.json").is_file():
                like = run.config.tvad.backbone or "shipped backbone"
                report(f"[tvad] a randomly initialized copy of the {like} in {path}")
                random_backbone(run.config.tvad.backbone, path)
        else:
            path = setting_dir / "backbone-pretrained" / "backbone"
            if not (path / "config.json").is_file():
                pretrain(run.config, report=report, run_dir=path.parent)
    return dataclasses.replace(run.config, tvad=dataclasses.replace(run.config.tvad,
                                                                    backbone=str(path)))


def _tvad_plain(run: PlannedRun, folder: Path, sweep_dir: Path, splits, report) -> dict:
    cfg = run.config
    model = plain_model(load_frozen_backbone(cfg.tvad.backbone), cfg.tvad.model,
                        cfg.tvad.stage1.view, cfg.tvad.stage2.view)
    return {split: _scalars(evaluate_model(model, cfg, split, run.setting.one_shot,
                                           report=report)) for split in splits}


def _s3m(run: PlannedRun, folder: Path, sweep_dir: Path, splits, report) -> dict:
    run_dir = _lender(run, sweep_dir) or train_s3m(run.config, folder / "run", report)
    key = f"s3m_sigma{float(run.setting.sigma):g}"
    results = {split: evaluate_run(run_dir, split, report=report) for split in splits}
    if any(key not in r for r in results.values()):
        raise ConfigError(f"setting {run.setting.name!r}: the S3M run reports sigma 0 and "
                          f"s3m.sigma only; set s3m.sigma={run.setting.sigma:g}")
    return {split: r[key] for split, r in results.items()}


def _local_patterns(run: PlannedRun, folder: Path, sweep_dir: Path, splits, report) -> dict:
    run_dir = train_local_patterns(run.config, folder / "run", itam_from=_lender(run, sweep_dir),
                                   report=report)
    return {split: evaluate_local_patterns_run(run_dir, split, report=report)["local_patterns"]
            for split in splits}


def _vlavad(run: PlannedRun, folder: Path, sweep_dir: Path, splits, report) -> dict:
    lender = _lender(run, sweep_dir)
    score = run.setting.score
    if lender and _trained_alike(config_lib.load(Config, lender / "config.json"), run.config):
        # only the scoring differs: the lender's run, scored as this row says
        return {split: vlavad_aucs(lender, split, report, scoring=run.config.vlavad)[score]
                for split in splits}
    run_dir = train_vlavad(run.config, folder / "run", report=report)
    return {split: evaluate_vlavad_run(run_dir, split, report=report)[score]
            for split in splits}


def _trained_alike(a: Config, b: Config) -> bool:
    """Do two configs train the same VLAVAD run (they may score it differently)?"""
    scoring = {"weight": 0.0, "normalize": "video", "sigma": 0.0, "eval_split": ""}
    return (dataclasses.replace(a.vlavad, **scoring) == dataclasses.replace(b.vlavad, **scoring)
            and dataclasses.replace(a, vlavad=b.vlavad) == b)


def _frame_difference(run: PlannedRun, folder: Path, sweep_dir: Path, splits, report) -> dict:
    out = {}
    for split in splits:
        scores, labels = baseline_scores(run.config, split, report)
        auc = frame_auc(scores, labels, run.setting.sigma)
        out[split] = {"micro_auc": auc.micro_auc, "macro_auc": auc.macro_auc}
    return out


def _ensemble(run: PlannedRun, folder: Path, sweep_dir: Path, splits, report) -> dict:
    """Fuse the members' frame scores (per-video min-max), weights chosen on
    ENSEMBLE_VALIDATION; per split the fused AUCs and the weights ("weight <member>")."""
    seed = Path(run.folder).name

    def parts(split: str) -> tuple[dict, dict]:
        _, labels = baseline_scores(run.config, split, report)
        return {m: _member_scores(sweep_dir / slug(m) / seed, split, report)
                for m in run.setting.members}, labels

    weights, val_auc = choose_weights(*parts(ENSEMBLE_VALIDATION), per="video",
                                      sigma=run.setting.sigma)
    report(f"[tvad] ensemble weights (micro AUC {val_auc:.3f} on {ENSEMBLE_VALIDATION}): "
           f"{weights}")
    out = {}
    for split in splits:
        members, labels = parts(split)
        auc = frame_auc(fuse(members, weights, "video"), labels, run.setting.sigma)
        out[split] = {"micro_auc": auc.micro_auc, "macro_auc": auc.macro_auc,
                      f"{ENSEMBLE_VALIDATION}_micro_auc": val_auc,
                      **{f"weight {m}": float(w) for m, w in weights.items()}}
    return out


def _member_scores(run_folder: Path, split: str, report) -> dict[str, np.ndarray]:
    """{video: [T]} frame scores of a finished member run (its run.json names its method)."""
    record = json.loads((run_folder / RUN).read_text())
    setting, cfg = record["setting"], config_lib.from_dict(Config, record["config"])
    if setting["method"] == "tvad":
        return ahd_frame_scores(load_model(run_folder / "run" / "model"), cfg, split, report)
    if setting["method"] == "local_patterns":
        return local_patterns_scores(run_folder / "run", split, report)[0]
    return vlavad_scores(run_folder / "run", split, report)[0][setting["score"]]


METHODS: dict[str, Callable] = {"tvad": _tvad, "tvad_plain": _tvad_plain, "s3m": _s3m,
                                "local_patterns": _local_patterns, "vlavad": _vlavad,
                                "frame_difference": _frame_difference, "ensemble": _ensemble}


# ---------------------------------------------------------------------------------------------
# Aggregation

def finished_runs(family: Family, sweep_dir: str | Path) -> list[dict]:
    """The result.json of every finished run of the family's settings, in table order."""
    out = []
    for setting in family.settings:
        for path in sorted((Path(sweep_dir) / slug(setting.name)).glob(f"*/{RESULT}")):
            out.append(json.loads(path.read_text()))
    return out


def aggregate(family: Family, sweep_dir: str | Path, report: Report = print) -> dict:
    """sweep.json (every finished run's metrics and the table's numbers), table.md (rows =
    settings, columns = split x metric, mean +- sample std over seeds, the best mean of each
    column in bold) and one bar chart with error bars per column (<split>_<metric>.png),
    from finished runs only."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise DataError(sweep_dir, f"no sweep of {family.name} here")
    runs = finished_runs(family, sweep_dir)
    columns = [(split, metric) for split in family.splits for metric in family.metrics]
    rows: dict[str, dict] = {}
    for setting in family.settings:
        mine = [r for r in runs if r["setting"] == setting.name]
        if not mine:
            continue
        rows[setting.name] = {"seeds": [r["seed"] for r in mine]}
        for split, metric in columns:
            values = [r["metrics"].get(split, {}).get(metric) for r in mine]
            values = [v for v in values if v is not None]
            if values:
                rows[setting.name][f"{split}/{metric}"] = {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                    "n": len(values)}
    summary = {"family": family.name, "description": family.description,
               "runs": runs, "table": rows}
    if jax.process_index() == 0:
        _write_json(sweep_dir / "sweep.json", summary)
        (sweep_dir / "table.md").write_text(table_markdown(family, rows))
        for split, metric in columns:
            key = f"{split}/{metric}"
            bars = {name: (row[key]["mean"], row[key]["std"]) for name, row in rows.items()
                    if key in row}
            if bars:
                plot_bars(bars, sweep_dir / f"{split}_{metric}.png",
                          title=f"{family.name}: {metric} ({split})")
    report(f"[tvad] sweep table in {sweep_dir / 'table.md'}")
    return summary


def readme_section(family: Family, summary: dict, command: str) -> str:
    """A results section for a README: the command, the runs and their total run time, the
    table (`table_markdown`)."""
    runs = summary["runs"]
    seeds = sorted({r["seed"] for r in runs if r["seed"] is not None})
    minutes = sum(r.get("wall_s", 0.0) for r in runs) / 60
    return (f"`{command}`: {len(runs)} runs ({len(seeds)} seed{'s' * (len(seeds) != 1)}), "
            f"{minutes:.0f} minutes of run time in all; mean ± sample std over seeds.\n\n"
            + table_markdown(family, summary["table"]))


def write_readme_section(path: str | Path, family: Family, section: str) -> None:
    """Replace what stands between the lines `<!-- results:FAMILY -->` and
    `<!-- /results:FAMILY -->` of a markdown file with `section` (written atomically); a
    file without exactly one such pair is a DataError saying what to add."""
    path = Path(path)
    start, end = f"<!-- results:{family.name} -->", f"<!-- /results:{family.name} -->"
    text = path.read_text() if path.is_file() else ""
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise DataError(path, f"needs one line {start!r} and, after it, one line {end!r}: "
                              f"the {family.name} results go between them")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    write_text_atomic(path, f"{head}{start}\n{section.rstrip()}\n{end}{tail}")


def table_markdown(family: Family, rows: dict) -> str:
    """The family's table: mean +- std (n seeds) per column, the best mean in bold."""
    columns = [f"{split}/{metric}" for split in family.splits for metric in family.metrics]
    best = {c: max((r[c]["mean"] for r in rows.values() if c in r), default=None)
            for c in columns}
    lines = [f"### {family.description}", "",
             "| setting | seeds | " + " | ".join(c.replace("/", " ") for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for name, row in rows.items():
        cells = []
        for c in columns:
            if c not in row:
                cells.append("–")
                continue
            text = f"{row[c]['mean']:.3f} ± {row[c]['std']:.3f}"
            cells.append(f"**{text}**" if row[c]["mean"] == best[c] else text)
        lines.append(f"| {name} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
