"""Markdown tables, summaries in a run folder, and that each figure writes a PNG."""
import json

import numpy as np

from tvad_jax.eval import rbdc, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_markdown_table_flattens_nested_results():
    table = report.markdown_table({"target": {"bleu4": 62.671, "num_videos": 3}, "auc": 0.5},
                                  title="text")
    assert table == ("### text\n\n| metric | value |\n|---|---|\n"
                     "| target / bleu4 | 62.6710 |\n| target / num_videos | 3 |\n"
                     "| auc | 0.5000 |\n")


def test_write_summary(tmp_path):
    paths = report.write_summary(tmp_path / "run", "eval_x", {"rbdc": 0.25})
    assert [p.name for p in paths] == ["eval_x.json", "eval_x.md"]
    assert json.loads(paths[0].read_text()) == {"rbdc": 0.25}
    assert "| rbdc | 0.2500 |" in paths[1].read_text()


def test_figures_write_png(tmp_path):
    rng = np.random.default_rng(0)
    fpr = np.linspace(0, 1, 11)
    written = [report.plot_roc({"micro": (fpr, np.sqrt(fpr), 0.66)}, tmp_path / "roc.png")]
    tracks = rbdc.tracks_from_rows([np.array([[0, 0, 0, 0, 9, 9], [0, 1, 2, 0, 11, 9]])])
    dets = rbdc.detections_from_rows([np.array([[0, 0, 0, 9, 9, 0.9], [1, 50, 50, 59, 59, 0.5]])])
    written.append(report.plot_detection_curves(rbdc.rbdc_tbdc(tracks, dets, 10),
                                                tmp_path / "curves.png"))
    frame = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64))
    mask[10:20, 30:40] = 1
    written.append(report.plot_heatmap_overlay(frame, mask, rng.random((12, 16)),
                                               tmp_path / "overlay.png", title="frame 3"))
    gt = np.array([[0, f, 10 + 2 * f, 10, 20 + 2 * f, 25] for f in range(10)])
    pred = gt + np.array([0, 0, 1, 1, 1, 1])
    written.append(report.plot_trajectories(gt, pred, tmp_path / "traj.png", frame_size=(48, 64),
                                            background=frame))
    written.append(report.plot_trajectories(gt, np.zeros((0, 6)), tmp_path / "traj2.png"))
    for path in written:
        assert path.read_bytes()[:8] == PNG_MAGIC, path
