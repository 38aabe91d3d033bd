"""Sweeps: the run plan, the table, and kill -9 / relaunch ending with the uninterrupted table."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import portpicker
import pytest
from processes import job_env, kill_when, run_together
from train_helpers import subprocess_env

import experiments
from tvad_jax import config as config_lib
from tvad_jax.cli import main
from tvad_jax.config import ConfigError
from tvad_jax.errors import DataError
from tvad_jax.jobs import sweep

REPO = Path(__file__).resolve().parents[2]
experiments.load_families()


def _family(**kw) -> sweep.Family:
    settings = (sweep.Setting("frame difference", "frame_difference", seeded=False),
                sweep.Setting("S3M", "s3m"),
                sweep.Setting("S3M, sigma 1", "s3m", sigma=1.0, reuse="S3M"))
    return sweep.Family("toy", "a test family", kw.pop("settings", settings), config="tiny",
                        splits=("test", "test_seen"), **kw)


def test_families_of_the_paper_tables_are_registered():
    names = config_lib.names("sweep")
    assert {"tvad_table4", "tvad_table3", "tvad_layers", "baselines",
            "local_patterns_table3", "vlavad_table2", "ensemble", "backbones"} <= set(names)
    assert "003" in config_lib.get("local_patterns_table3", "sweep").description
    assert "004" in config_lib.get("vlavad_table2", "sweep").description
    table4 = config_lib.get("tvad_table4", "sweep")
    assert "000" in table4.description
    assert [s.name for s in table4.settings] == ["T-VAD", "w/o RAE", "w/o AHD", "w/o AHD & RAE"]


def test_plan_orders_seeds_runs_unseeded_settings_once_and_follows_reuse():
    runs = sweep.plan_runs(_family(), (3, 5), overrides=("s3m.batch_size=8",))
    assert [r.folder for r in runs] == ["frame-difference/once", "S3M/seed3", "S3M-sigma-1/seed3",
                                        "S3M/seed5", "S3M-sigma-1/seed5"]
    s3m = runs[1]
    assert s3m.config.s3m.train.loop.seed == 3 and s3m.config.s3m.data_seed == 3
    assert s3m.config.s3m.batch_size == 8 and s3m.overrides[-1] == "s3m.batch_size=8"
    only = sweep.plan_runs(_family(), (0,), only=("S3M, sigma 1",))
    assert [r.setting.name for r in only] == ["S3M", "S3M, sigma 1"]
    with pytest.raises(ConfigError, match="no setting 'nope'"):
        sweep.plan_runs(_family(), (0,), only=("nope",))


def test_bad_families_are_refused():
    with pytest.raises(ConfigError, match="must be an earlier setting"):
        _family(settings=(sweep.Setting("a", "s3m", reuse="b"), sweep.Setting("b", "s3m")))
    with pytest.raises(ConfigError, match="share a folder name"):
        _family(settings=(sweep.Setting("w/o x", "s3m"), sweep.Setting("w-o x", "s3m")))
    with pytest.raises(ConfigError, match="only tvad, s3m, local_patterns and vlavad runs"):
        sweep.Setting("a", "frame_difference", reuse="b")
    with pytest.raises(ValueError, match="method"):
        sweep.Setting("a", "bogus")
    with pytest.raises(ConfigError, match="only an ensemble, names its members"):
        sweep.Setting("a", "s3m", members=("b",))
    with pytest.raises(ConfigError, match="only an ensemble, names its members"):
        sweep.Setting("a", "ensemble")
    with pytest.raises(ConfigError, match="a backbone of its own is for a tvad setting"):
        sweep.Setting("a", "s3m", backbone="random")
    with pytest.raises(ConfigError, match="a backbone of its own is for a tvad setting"):
        sweep.Setting("a", "tvad", reuse="b", backbone="random")
    with pytest.raises(ValueError, match="backbone"):
        sweep.Setting("a", "tvad", backbone="bogus")
    for members in (("S3M",), ("later",), ("frame difference",)):
        with pytest.raises(ConfigError, match="must be an earlier seeded setting"):
            _family(settings=(sweep.Setting("frame difference", "frame_difference",
                                            seeded=False),
                              sweep.Setting("S3M", "s3m"),
                              sweep.Setting("e", "ensemble", members=members),
                              sweep.Setting("later", "vlavad")))


def test_an_ensemble_plans_its_members_first_and_waits_for_them():
    family = config_lib.get("ensemble", "sweep")
    assert all(paper in family.description for paper in ("000", "003", "004"))
    runs = sweep.plan_runs(family, (0, 1), only=("ensemble",))
    assert [r.folder for r in runs] == [
        f"{sweep.slug(name)}/seed{k}" for k in (0, 1)
        for name in ("T-VAD (AHD)", "Local patterns", "VLAVAD", "ensemble")]
    assert sweep._prerequisites(runs[-1]) == ["T-VAD-AHD/seed1", "Local-patterns/seed1",
                                              "VLAVAD/seed1"]


def test_table_is_mean_and_sample_std_over_seeds_with_the_best_in_bold(tmp_path):
    family = _family()
    values = {("S3M", 0): 0.6, ("S3M", 1): 0.8, ("S3M, sigma 1", 0): 0.7,
              ("S3M, sigma 1", 1): 0.9, ("frame difference", None): 0.5}
    for (name, seed), v in values.items():
        folder = tmp_path / sweep.slug(name) / ("once" if seed is None else f"seed{seed}")
        folder.mkdir(parents=True)
        metrics = {"test": {"micro_auc": v, "macro_auc": v / 2}}   # no test_seen numbers
        (folder / sweep.RESULT).write_text(json.dumps(
            {"setting": name, "seed": seed, "metrics": metrics}))
    summary = sweep.aggregate(family, tmp_path, report=lambda m: None)
    row = summary["table"]["S3M, sigma 1"]["test/micro_auc"]
    assert row["n"] == 2 and row["mean"] == pytest.approx(0.8)
    assert row["std"] == pytest.approx(np.std([0.7, 0.9], ddof=1))
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[5] == "| S3M | 2 | 0.700 ± 0.141 | 0.350 ± 0.071 | – | – |"
    assert table[6] == "| S3M, sigma 1 | 2 | **0.800 ± 0.141** | **0.400 ± 0.071** | – | – |"
    assert table[4] == "| frame difference | 1 | 0.500 ± 0.000 | 0.250 ± 0.000 | – | – |"
    assert (tmp_path / "test_micro_auc.png").stat().st_size > 0
    assert not (tmp_path / "test_seen_micro_auc.png").exists()
    assert json.loads((tmp_path / "sweep.json").read_text())["table"] == summary["table"]
    with pytest.raises(DataError, match="no sweep"):
        sweep.aggregate(family, tmp_path / "missing")


def _sweep_cmd(family: str, tiny_cfg, sweep_dir: Path, *extra: str) -> list[str]:
    return ["sweep", family, "--config", "tiny", "--sweep-dir", str(sweep_dir), *extra,
            f"synth.out_dir={tiny_cfg.synth.out_dir}", f"runs_dir={sweep_dir.parent / 'runs'}"]


def test_cli_lists_families_and_dry_runs(tiny_prepared, tmp_path, capsys):
    cfg, _ = tiny_prepared
    assert main(["sweep", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "tvad_table4: Paper 000 Table 4" in listed and "baselines:" in listed
    assert main(_sweep_cmd("baselines", cfg, tmp_path / "sw", "--seeds", "0,1", "--dry-run")) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["run"] for x in lines] == [
        "frame-difference/once", "frame-difference-sigma-3/once", "frame-difference-sigma-10/once",
        "S3M-boxes/seed0", "S3M-boxes-sigma-3/seed0", "S3M-boxes/seed1", "S3M-boxes-sigma-3/seed1"]
    assert "s3m.train.loop.seed=1" in lines[-1]["overrides"] and lines[0]["config"] == "tiny"
    assert not (tmp_path / "sw").exists()
    with pytest.raises(SystemExit):
        main(["sweep", "baselines", "--seeds", "0,0"])


def test_baselines_sweep_killed_mid_run_relaunches_to_the_uninterrupted_table(tiny_prepared,
                                                                              tmp_path, capsys):
    """`tvad sweep baselines --only "S3M (boxes), sigma 3"` on the tiny config (2 seeds of the
    S3M, trained once per seed and scored at two smoothings): SIGKILL while the second seed's
    S3M trains, relaunch, and the table equals an uninterrupted sweep's; no finished run is
    computed again (its result.json keeps its bytes)."""
    cfg, _ = tiny_prepared
    args = ("--seeds", "0,1", "--only", "S3M (boxes), sigma 3", "s3m.sigma=3")
    reference = tmp_path / "reference"
    assert main(_sweep_cmd("baselines", cfg, reference, *args)) == 0

    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "tvad_jax.cli",
                             *_sweep_cmd("baselines", cfg, killed, *args)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = killed / "S3M-boxes" / "seed1" / "run" / "metrics.jsonl"
    kill_when(proc, lambda: metrics.is_file() and metrics.stat().st_size > 0,
              "the second seed's training")
    first = killed / "S3M-boxes" / "seed0" / sweep.RESULT
    before = first.read_bytes()
    assert not (killed / "S3M-boxes" / "seed1" / sweep.RESULT).exists()
    assert main(_sweep_cmd("baselines", cfg, killed, *args)) == 0
    assert first.read_bytes() == before
    assert (killed / "table.md").read_text() == (reference / "table.md").read_text()
    assert len(sweep.finished_runs(config_lib.get("baselines", "sweep"), killed)) == 4
    # Another definition of a finished run is refused, not mixed in.
    assert main(_sweep_cmd("baselines", cfg, killed, *args[:-1], "s3m.sigma=2")) == 2
    assert "another definition" in capsys.readouterr().err
    # The README's results section is rebuilt from the finished runs, between its markers.
    readme = tmp_path / "README.md"
    readme.write_text("# r\n<!-- results:baselines -->\nold\n<!-- /results:baselines -->\nend\n")
    assert main(_sweep_cmd("baselines", cfg, killed, *args, "--report", "--readme",
                           str(readme))) == 0
    text = readme.read_text()
    assert "old" not in text and text.startswith("# r\n<!-- results:baselines -->\n")
    assert text.endswith("<!-- /results:baselines -->\nend\n")
    assert '`tvad sweep baselines --seeds 0,1 --only "S3M (boxes), sigma 3" --config tiny ' in text
    assert "4 runs (2 seeds)" in text and (killed / "table.md").read_text() in text
    readme.write_text("# no markers\n")
    assert main(_sweep_cmd("baselines", cfg, killed, *args, "--report", "--readme",
                           str(readme))) == 2
    assert "<!-- results:baselines -->" in capsys.readouterr().err
    assert readme.read_text() == "# no markers\n"


@pytest.mark.slow
def test_a_sweep_on_two_processes_writes_the_one_process_table(tiny_prepared, tmp_path):
    """`tvad sweep` on a pod: 2 processes on 127.0.0.1 (TVAD_COORDINATOR_ADDRESS & co., one
    CPU device each) run every run over the global mesh (S3M data-parallel over both), only
    process 0 writes run and sweep files, and the table equals a one-process sweep's."""
    cfg, _ = tiny_prepared
    args = ("--seeds", "0,1", "--only", "S3M (boxes), sigma 3", "s3m.sigma=3")
    reference = tmp_path / "reference"
    assert main(_sweep_cmd("baselines", cfg, reference, *args)) == 0
    pod = tmp_path / "pod"
    port = portpicker.pick_unused_port()
    command = [sys.executable, "-m", "tvad_jax.cli",
               *_sweep_cmd("baselines", cfg, pod, *args, "s3m.train.mesh.data=2")]
    run_together([(command, job_env(pid, 2, port)) for pid in range(2)], REPO, timeout=600)
    summary = json.loads((pod / "S3M-boxes" / "seed0" / "run" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["mesh"]["data"] == 2
    assert (pod / "table.md").read_text() == (reference / "table.md").read_text()
    assert not list(pod.rglob(".*.tmp"))


def test_a_claimed_run_is_held_until_its_process_lets_go(tmp_path):
    with sweep._claim(tmp_path / "run") as first:
        with sweep._claim(tmp_path / "run") as second:
            assert first and not second
    with sweep._claim(tmp_path / "run") as again:
        assert again


def test_parallel_runs_refuse_a_coordinator(monkeypatch, tmp_path):
    monkeypatch.setenv("TVAD_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    with pytest.raises(ConfigError, match="independent processes"):
        sweep.run_sweep(_family(), (0,), sweep_dir=tmp_path, parallel_runs=True)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_parallel_runs_on_two_processes_share_the_runs_and_the_table(tiny_prepared, tmp_path):
    """`tvad sweep --parallel-runs` from 2 independent processes on one sweep folder: every
    run is computed by exactly one of them, reused models are waited for, and the table
    equals a one-process sweep's."""
    cfg, _ = tiny_prepared
    args = ("--seeds", "0,1", "--only", "S3M (boxes), sigma 3", "s3m.sigma=3")
    reference = tmp_path / "reference"
    assert main(_sweep_cmd("baselines", cfg, reference, *args)) == 0
    shared = tmp_path / "shared"
    command = [sys.executable, "-m", "tvad_jax.cli",
               *_sweep_cmd("baselines", cfg, shared, *args, "--parallel-runs")]
    outputs = run_together([(command, subprocess_env(1))] * 2, REPO, timeout=600)
    family = config_lib.get("baselines", "sweep")
    folders = [run.folder for run in sweep.plan_runs(family, (0, 1), ("S3M (boxes), sigma 3",),
                                                     ("s3m.sigma=3",), "tiny")]
    for folder in folders:          # each run started by exactly one process
        assert sum(out.count(f"sweep baselines: {folder}\n") for out in outputs) == 1, folder
    assert len(sweep.finished_runs(family, shared)) == len(folders) == 4
    assert (shared / "table.md").read_text() == (reference / "table.md").read_text()


@pytest.mark.slow
def test_tvad_table4_three_seeds_killed_and_relaunched(tiny_backbone, tmp_path):
    """The issue's check: `tvad sweep tvad_table4 --seeds 0,1,2` on the tiny config, killed
    with SIGKILL in the middle and relaunched, ends with the uninterrupted sweep's table."""
    cfg, backbone = tiny_backbone
    args = ("--seeds", "0,1,2", f"tvad.backbone={backbone}")
    reference = tmp_path / "reference"
    assert main(_sweep_cmd("tvad_table4", cfg, reference, *args)) == 0
    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "tvad_jax.cli",
                             *_sweep_cmd("tvad_table4", cfg, killed, *args)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    metrics = killed / "T-VAD" / "seed1" / "run" / "stage2-A" / "metrics.jsonl"
    kill_when(proc, lambda: metrics.is_file() and metrics.stat().st_size > 0,
              "stage 2 of the second seed", timeout=900)
    assert main(_sweep_cmd("tvad_table4", cfg, killed, *args)) == 0
    assert (killed / "table.md").read_text() == (reference / "table.md").read_text()


@pytest.mark.slow
def test_local_patterns_table3_runs_at_the_tiny_size(tiny_backbone, tmp_path):
    """Paper 003's Table 3 family end to end on the tiny config (one seed, every row): the
    rows that reuse the stage-1 run's ITAM do not train their own, and the table has a cell
    for every row and split."""
    cfg, backbone = tiny_backbone
    sweep_dir = tmp_path / "sweep"
    assert main(_sweep_cmd("local_patterns_table3", cfg, sweep_dir, "--seeds", "0",
                           f"local.backbone={backbone}")) == 0
    family = config_lib.get("local_patterns_table3", "sweep")
    table = (sweep_dir / "table.md").read_text()
    for setting in family.settings:
        assert f"| {setting.name} |" in table, setting.name
        run = sweep_dir / sweep.slug(setting.name) / "seed0" / "run"
        lent = (run / "itam" / "metrics.jsonl").read_bytes() if (run / "itam").is_dir() else None
        if setting.reuse:   # the lender's ITAM, copied, not trained again
            lender = sweep_dir / sweep.slug(setting.reuse) / "seed0" / "run"
            assert lent == (lender / "itam" / "metrics.jsonl").read_bytes(), setting.name
    assert table.count("–") == 0


@pytest.mark.slow
def test_vlavad_table2_runs_at_the_tiny_size(tiny_backbone, tmp_path):
    """Paper 004's Table 2 family end to end on the tiny config (one seed, every row): the
    backbone answers each split once for every row but the tracker's, which answers once on
    its own tracks, rows that only score differently evaluate the lender's run, and every
    cell is filled."""
    cfg, backbone = tiny_backbone
    sweep_dir = tmp_path / "sweep"
    cache = tmp_path / "answers"
    assert main(_sweep_cmd("vlavad_table2", cfg, sweep_dir, "--seeds", "0",
                           f"vlavad.backbone={backbone}", f"vlavad.cache_dir={cache}")) == 0
    family = config_lib.get("vlavad_table2", "sweep")
    table = (sweep_dir / "table.md").read_text()
    assert table.count("–") == 0
    answered = sorted(p.name.split("-")[0] for p in cache.glob("*.json"))
    assert answered == ["test"] * 2 + ["test_seen"] * 2 + ["train_normal"] * 2
    for setting in family.settings:
        assert f"| {setting.name} |" in table, setting.name
        run = sweep_dir / sweep.slug(setting.name) / "seed0" / "run"
        trains = any(o.startswith(("vlavad.predictor=", "vlavad.tracks=",
                                   "vlavad.skip_saturated="))
                     for o in setting.overrides)
        assert run.is_dir() == (not setting.reuse or (trains and setting.score == "vlavad")), \
            setting.name


@pytest.mark.slow
def test_ensemble_fuses_the_three_detectors_at_the_tiny_size(tiny_backbone, tmp_path):
    """The ensemble family end to end on the tiny config: each detector trains once, the
    ensemble's weights lie on the 0.1 grid, sum to 1 and fuse to a validation AUC no lower
    than any detector alone (each is a point of the grid), and every cell is filled; on 2
    processes the same sweep writes the same table."""
    from tvad_jax.eval.baselines import baseline_scores
    from tvad_jax.eval.fusion import minmax
    from tvad_jax.eval.metrics import frame_auc

    cfg, backbone = tiny_backbone
    sweep_dir = tmp_path / "sweep"
    assert main(_sweep_cmd("ensemble", cfg, sweep_dir, "--seeds", "0",
                           f"tvad.backbone={backbone}")) == 0
    family = config_lib.get("ensemble", "sweep")
    table = (sweep_dir / "table.md").read_text()
    assert table.count("–") == 0 and all(f"| {s.name} |" in table for s in family.settings)
    result = json.loads((sweep_dir / "ensemble" / "seed0" / sweep.RESULT).read_text())
    metrics = result["metrics"]["test"]
    weights = {m: metrics[f"weight {m}"] for m in family.setting("ensemble").members}
    assert sum(weights.values()) == pytest.approx(1.0)
    assert all(abs(10 * w - round(10 * w)) < 1e-9 for w in weights.values())
    _, labels = baseline_scores(cfg, sweep.ENSEMBLE_VALIDATION)
    for name in weights:
        alone = sweep._member_scores(sweep_dir / sweep.slug(name) / "seed0",
                                     sweep.ENSEMBLE_VALIDATION, report=lambda m: None)
        auc = frame_auc(minmax(alone, "video"), labels, sigma=3.0).micro_auc
        assert metrics["val_micro_auc"] >= auc - 1e-12, name
    # on a pod: the three detectors train and score on 2 processes (one CPU device each),
    # each reading its share of the videos, and the table is the one-process sweep's
    pod = tmp_path / "pod"
    command = [sys.executable, "-m", "tvad_jax.cli",
               *_sweep_cmd("ensemble", cfg, pod, "--seeds", "0", f"tvad.backbone={backbone}",
                           f"vlavad.cache_dir={pod / 'answers'}")]   # asked anew, in shares
    port = portpicker.pick_unused_port()
    run_together([(command, job_env(pid, 2, port)) for pid in range(2)], REPO, timeout=900)
    for engine_run in ("T-VAD-AHD/seed0/run/stage1", "Local-patterns/seed0/run/rm",
                       "VLAVAD/seed0/run/predictor"):
        assert json.loads((pod / engine_run / "summary.json").read_text())["processes"] == 2
    assert (pod / "table.md").read_text() == table


@pytest.mark.slow
def test_backbones_family_makes_its_backbones_once_at_the_tiny_size(tiny_backbone, tmp_path):
    """The backbones family on the tiny config (pretraining cut to 3 steps): the random and
    the pretrained backbones are made in their settings' folders and T-VAD trains on each."""
    import jax
    from flax import traverse_util

    from tvad_jax.models import backbone_io
    from tvad_jax.models.vlm import init_params

    cfg, backbone = tiny_backbone
    sweep_dir = tmp_path / "sweep"
    assert main(_sweep_cmd("backbones", cfg, sweep_dir, "--seeds", "0",
                           f"tvad.backbone={backbone}", "pretrain.train.loop.steps=3")) == 0
    table = (sweep_dir / "table.md").read_text()
    assert table.count("–") == 0
    random_dir = sweep_dir / "random-init" / "backbone-random"
    pretrained_dir = sweep_dir / "pretrained-100-steps" / "backbone-pretrained" / "backbone"
    shipped = backbone_io.load_backbone(backbone, with_tokenizer=False)
    random = backbone_io.load_backbone(random_dir, with_tokenizer=False)
    assert random[0] == shipped[0]                    # its architecture, fresh weights:
    fresh = init_params(shipped[0], jax.random.key(0))
    for path, value in traverse_util.flatten_dict(fresh, sep="/").items():
        np.testing.assert_allclose(traverse_util.flatten_dict(random[1], sep="/")[path], value,
                                   rtol=1e-3, atol=1e-4, err_msg=path)    # stored in float16
    assert json.loads((pretrained_dir.parent / "summary.json").read_text())["final_step"] == 3
    for setting, used in (("shipped", backbone), ("random-init", random_dir),
                          ("pretrained-100-steps", pretrained_dir)):
        config = json.loads((sweep_dir / setting / "seed0" / "run" / "config.json").read_text())
        assert config["tvad"]["backbone"] == str(used), setting
