import json

import jax
import pytest

from tvad_jax import config as config_lib, configs  # noqa: F401  (registers the configs)
from tvad_jax.cli import main
from tvad_jax.config import ConfigError


def test_demo_runs_end_to_end_on_the_tiny_config(tiny_backbone, tmp_path, capsys):
    cfg, backbone = tiny_backbone
    args = ["demo", "--config", "tiny", f"synth.out_dir={cfg.synth.out_dir}",
            f"runs_dir={tmp_path / 'runs'}", f"tvad.backbone={backbone}",
            "demo_detectors=local-patterns,vlavad"]
    assert main(args) == 0
    err = capsys.readouterr().err
    run_dir = next((tmp_path / "runs").glob("demo-*"))
    assert f"demo report in {run_dir}" in err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["splits"]) == ["test", "test_seen"]
    heatmap = ("micro_auc", "macro_auc", "rbdc", "tbdc")
    text = ("yes_no_accuracy", "yes_no_balanced_accuracy", "bleu4_target", "bleu4_trajectory")
    extras = ["Local patterns (003)", "VLAVAD (SPA + S3M)", "VLAVAD: SPA",
              "VLAVAD: S3M on answers", "Ensemble (000 + 003 + 004)"]
    methods = ["frame difference", "S3M on box tracks", *extras, "T-VAD", "T-VAD w/o RAE",
               "T-VAD w/o AHD"]
    baselines = ["backbone zero-shot (w/o AHD & RAE)", "backbone one-shot"]   # open set only
    assert list(metrics["splits"]["test"]) == methods + baselines
    assert list(metrics["splits"]["test_seen"]) == methods
    for split, rows in metrics["splits"].items():
        for name, row in rows.items():
            has_heat = name in ("frame difference", "S3M on box tracks", "T-VAD", "T-VAD w/o RAE",
                                *extras)
            has_text = name.startswith(("T-VAD", "backbone")) and name != "T-VAD w/o RAE"
            assert all((k in row) == has_heat for k in heatmap[:2]), (split, name)
            assert all((k in row) == has_text for k in text), (split, name)
            for k in heatmap + text[:2]:
                assert k not in row or 0.0 <= row[k] <= 1.0, (split, name, k)
        assert rows["T-VAD"]["micro_auc"] == rows["T-VAD w/o RAE"]["micro_auc"]   # same AHD
        weights = rows["Ensemble (000 + 003 + 004)"]["weights"]     # chosen once, on val
        assert weights == metrics["splits"]["test"]["Ensemble (000 + 003 + 004)"]["weights"]
        assert sorted(weights) == ["Local patterns (003)", "T-VAD (AHD)", "VLAVAD (SPA + S3M)"]
        assert abs(sum(weights.values()) - 1.0) < 1e-9
        assert sum(rows["T-VAD"]["yes_no_confusion"].values()) == \
            metrics["dataset"][split]["videos"]
        assert (run_dir / "s3m" / f"roc_{split}.png").stat().st_size > 0
        assert (run_dir / "tvad-full" / f"roc_{split}.png").stat().st_size > 0
        assert "T-VAD:" in (run_dir / f"dialogue_{split}.md").read_text()
    assert metrics["dataset"]["test"]["videos"] == 4
    assert metrics["dataset"]["test_seen"]["videos"] == 2
    assert json.loads((run_dir / "config.json").read_text())["synth"]["num_frames"] == 32
    report = (run_dir / "report.md").read_text()
    assert report.startswith("### Open-set `test` split") and "| T-VAD w/o AHD |" in report
    assert "### Closed-set `test_seen` split" in report
    assert f"jax {jax.__version__} (environment.json)" in report
    assert any((run_dir / "tvad-full").glob("heatmap_*.png"))
    assert "| Local patterns (003) |" in report and "| VLAVAD (SPA + S3M) |" in report
    assert (run_dir / "local-patterns" / "local_stats.json").is_file()
    assert (run_dir / "vlavad" / "config.json").is_file()
    # the baseline rows are what `tvad eval backbone` gives on its own
    capsys.readouterr()
    assert main(["eval", "backbone", *args[1:-1]]) == 0
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    zero_shot = metrics["splits"]["test"]["backbone zero-shot (w/o AHD & RAE)"]
    for key in text:
        assert zero_shot[key] == pytest.approx(alone[key]), key


def test_an_unknown_demo_detector_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"demo_detectors.*'local-patterns', 'vlavad'.*ensemble"):
        config_lib.resolve("tiny", ["demo_detectors=ensemble"])
