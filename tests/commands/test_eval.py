"""`tvad eval` subcommands through a parser built from `tvad_jax.commands.eval.add_parser`."""
import argparse
import json

import numpy as np
import pytest
from shared_data import shanghaitech_tracks_dir

from tvad_jax.commands import eval as eval_commands


def run(argv, capsys):
    parser = argparse.ArgumentParser(prog="tvad")
    eval_commands.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def test_rbdc_tbdc_on_shanghaitech_format_files(tmp_path, capsys):
    # Two videos in the ShanghaiTech layout; the expected numbers are the hand case of
    # tests/eval/test_rbdc_tbdc.py (video 01_0001) plus nothing detected in 01_0002.
    write_lines(tmp_path / "tracks" / "01_0001.txt",
                ["0,0,0,0,9,9", "0,1,0,0,9,9", "1,0,5,5,14,14"])
    write_lines(tmp_path / "tracks" / "01_0002.txt", ["0,7,100,100,120,130"])
    write_lines(tmp_path / "det" / "01_0001.txt", [
        "0,0,0,14,14,0.9", "0,0,0,9,9,0.8", "5,0,0,9,9,0.7", "1,50,50,60,60,0.6",
        "1,0,0,9,9,0.5"])
    code, out, err = run(["eval", "rbdc-tbdc", "--tracks", str(tmp_path / "tracks"),
                          "--detections", str(tmp_path / "det"), "--num-frames", "10",
                          "--run-dir", str(tmp_path / "run"), "--plot"], capsys)
    assert code == 0
    result = json.loads(out)
    # RBDR 2/4 from FPR 0 to 0.2, then 3/4 held to FPR 1; TBDR 2/3, held.
    assert result["rbdc"] == pytest.approx(0.2 * 0.5 + 0.8 * 0.75)
    assert result["tbdc"] == pytest.approx(2 / 3)
    assert result["num_tracks"] == 3 and result["num_regions"] == 4
    assert "| rbdc |" in err
    assert json.loads((tmp_path / "run" / "eval_rbdc_tbdc.json").read_text()) == result
    assert (tmp_path / "run" / "eval_rbdc_tbdc.md").exists()
    assert (tmp_path / "run" / "rbdc_tbdc.png").read_bytes()[:4] == b"\x89PNG"


def test_rbdc_tbdc_on_real_shanghaitech_tracks(tmp_path, capsys):
    assert shanghaitech_tracks_dir().is_dir(), (
        f"the shared ShanghaiTech track files are missing: {shanghaitech_tracks_dir().resolve()}")
    # Perfect detections (the ground-truth boxes) for every video: RBDC = TBDC = 1.
    for path in sorted(shanghaitech_tracks_dir().glob("[0-9]*.txt")):
        rows = np.loadtxt(path, delimiter=",", ndmin=2)
        write_lines(tmp_path / "det" / path.name,
                    [f"{int(r[1])},{int(r[2])},{int(r[3])},{int(r[4])},{int(r[5])},1.0"
                     for r in rows])
    code, out, _ = run(["eval", "rbdc-tbdc", "--tracks", str(shanghaitech_tracks_dir()),
                        "--detections", str(tmp_path / "det"), "--num-frames", "40791"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["rbdc"] == 1.0 and result["tbdc"] == 1.0
    assert result["num_tracks"] == 158


def test_bad_detections_file_fails_with_file_and_line(tmp_path, capsys):
    write_lines(tmp_path / "tracks" / "01_0001.txt", ["0,0,0,0,9,9"])
    write_lines(tmp_path / "det" / "01_0001.txt", ["0,0,0,9,9,0.5", "1,0,0,9,9"])
    code, out, err = run(["eval", "rbdc-tbdc", "--tracks", str(tmp_path / "tracks"),
                          "--detections", str(tmp_path / "det"), "--num-frames", "10"], capsys)
    assert code == 2 and out == ""
    assert "01_0001.txt:2: expected 6 comma-separated values" in err


def test_frame_auc(tmp_path, capsys):
    for name, labels, scores in (("a", [0, 0, 0], [0.2, 0.1, 0.3]), ("b", [1, 1], [0.6, 0.0]),
                                 ("c", [0, 1], [0.7, 0.3])):
        (tmp_path / "scores").mkdir(exist_ok=True)
        (tmp_path / "labels").mkdir(exist_ok=True)
        np.save(tmp_path / "scores" / f"{name}.npy", np.array(scores))
        np.save(tmp_path / "labels" / f"{name}.npy", np.array(labels))
    code, out, _ = run(["eval", "frame-auc", "--scores", str(tmp_path / "scores"),
                        "--labels", str(tmp_path / "labels"), "--plot",
                        "--runs-root", str(tmp_path / "runs")], capsys)
    assert code == 0
    result = json.loads(out)
    # Same videos as tests/eval/test_frame_auc.py's hand case.
    assert result["micro_auc"] == pytest.approx(5.5 / 12)
    assert result["macro_auc"] == pytest.approx((1.0 + 2.5 / 3 + 0.75) / 3)
    run_dir, = (tmp_path / "runs").iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "config.json", "environment.json", "eval_frame_auc.json", "eval_frame_auc.md",
        "roc.png"]


def test_text(tmp_path, capsys):
    refs = {"v1": {"target": "a man in a red coat", "trajectory": "walks left", "yes_no": "yes"},
            "v2": {"target": ["a white car", "a car"], "trajectory": "drives fast",
                   "yes_no": "no"}}
    preds = {"v1": {"target": "a man in a red coat", "trajectory": "walks left",
                    "yes_no": "Yes, he runs."},
             "v2": {"target": "a car", "trajectory": "drives fast", "yes_no": "No."}}
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    code, out, _ = run(["eval", "text", "--predictions", str(tmp_path / "preds.json"),
                        "--references", str(tmp_path / "refs.json")], capsys)
    assert code == 0
    result = json.loads(out)
    assert set(result) == {"target", "trajectory", "yes_no"}
    assert result["target"]["bleu4"] == pytest.approx(100.0)
    assert result["yes_no"]["accuracy"] == 1.0


@pytest.mark.parametrize("scores", [b"", b"\x93NUMPY garbage"])
def test_unreadable_scores_file_is_one_line_and_exit_2(tmp_path, capsys, scores):
    (tmp_path / "scores").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "scores" / "v.npy").write_bytes(scores)
    np.save(tmp_path / "labels" / "v.npy", np.array([0, 1]))
    code, out, err = run(["eval", "frame-auc", "--scores", str(tmp_path / "scores"),
                          "--labels", str(tmp_path / "labels")], capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "v.npy: not a readable .npy array" in err


@pytest.mark.parametrize("argv, message", [
    (["frame-auc", "--sigma", "nan"], "argument --sigma: expected a finite number >= 0, got nan"),
    (["frame-auc", "--sigma", "-1"], "argument --sigma: expected a finite number >= 0, got -1.0"),
    (["rbdc-tbdc", "--num-frames", "0"], "argument --num-frames: expected an integer >= 1"),
    (["frame-auc", "--run-dir", "{file}"], "{file}: exists and is not a folder"),
    (["text", "--run-dir", "{file}/run"], "{file}: exists and is not a folder"),
])
def test_bad_numbers_and_output_folders_fail_before_reading_anything(tmp_path, capsys, argv,
                                                                     message):
    """Usage errors at parse time, exit 2: the inputs are never read, nothing is written."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    inputs = {"frame-auc": ["--scores", "s", "--labels", "l"], "text": [
        "--predictions", "p.json", "--references", "r.json"], "rbdc-tbdc": [
        "--tracks", "t", "--detections", "d", "--num-frames", "5"]}[argv[0]]
    argv = [a.format(file=blocker) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        run(["eval", argv[0], *inputs, *argv[1:]], capsys)
    assert exit_info.value.code == 2
    assert message.format(file=blocker) in capsys.readouterr().err
    assert blocker.read_text() == "x" and sorted(tmp_path.iterdir()) == [blocker]
