import json

from tvad_jax.cli import main


def test_demo_runs_end_to_end_on_the_tiny_config(tmp_path, capsys):
    args = ["demo", "--config", "tiny", f"synth.out_dir={tmp_path / 'synth'}",
            f"runs_dir={tmp_path / 'runs'}"]
    assert main(args) == 0
    err = capsys.readouterr().err
    run_dir = next((tmp_path / "runs").glob("demo-*"))
    assert f"demo report in {run_dir}" in err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for method in ("frame_difference_sigma0", "s3m_sigma0"):
        assert 0.0 <= metrics[method]["micro_auc"] <= 1.0
        assert 0.0 <= metrics[method]["macro_auc"] <= 1.0
    assert metrics["frames"] == 4 * 32 and metrics["split"] == "test"
    assert metrics["dataset"]["test"]["videos"] == 4
    assert json.loads((run_dir / "config.json").read_text())["synth"]["num_frames"] == 32
    assert (run_dir / "report.md").read_text().startswith("### Open-set test split")
    assert (run_dir / "s3m" / "roc_test.png").stat().st_size > 0
