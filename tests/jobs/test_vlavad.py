"""Paper 004's detector as a job: train and evaluate end to end through the CLI (tiny config,
random tiny backbone), the answers' track windows, the kNN baseline, bad input."""
import contextlib
import dataclasses
import io
import json
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tvad_jax import config as config_lib
from tvad_jax.cli import main
from tvad_jax.data.files import waiting_lock
from tvad_jax.data.readers import make_reader
from tvad_jax.errors import DataError
from tvad_jax.eval.fusion import fuse
from tvad_jax.jobs.config import Config
from tvad_jax.jobs.shares import join_shares
from tvad_jax.jobs.vlavad import (ROWS, SplitAnswers, answers_of, answers_path, ask_share,
                                  evaluate_vlavad_run, knn_distance, track_windows, vlavad_aucs,
                                  vlavad_scores)
from tvad_jax.models.spa import normalize_answer
from tvad_jax.models.tvad import load_frozen_backbone


@pytest.fixture(scope="module")
def tiny_run(tiny_backbone, tmp_path_factory):
    cfg, backbone = tiny_backbone
    runs = tmp_path_factory.mktemp("vlavad_runs")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", "vlavad", "--config", "tiny", f"synth.out_dir={cfg.synth.out_dir}",
                     f"runs_dir={runs}", f"vlavad.backbone={backbone}"])
    assert code == 0
    return cfg, Path(out.getvalue().strip().splitlines()[-1])


def _cached(run_dir: Path, split: str, **vlavad) -> Path:
    """The run's answer file of `split` in the answer cache (its `vlavad` section changed)."""
    cfg = config_lib.load(Config, run_dir / "config.json")
    cfg = dataclasses.replace(cfg, vlavad=dataclasses.replace(cfg.vlavad, **vlavad))
    return answers_path(cfg, load_frozen_backbone(cfg.vlavad.backbone), split)


def test_train_then_eval_through_the_cli(tiny_run, capsys):
    cfg, run_dir = tiny_run
    for name in ("config.json", "vlavad_stats.json", "predictor/metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    cached = _cached(run_dir, "train_normal")
    assert cached.is_file() and cached.with_suffix(".npy").is_file()
    assert cached.parent == Path(cfg.prepared_dir) / "answers"
    stats = json.loads((run_dir / "vlavad_stats.json").read_text())
    assert stats["train_answers"] == str(cached)
    spa = stats["spa"]
    assert len(spa["prompts"]) == 1 and spa["prompts"][0] in ("pose", "behaviour", "appearance")
    stored = json.loads(cached.read_text())
    assert set(stored["answers"]) == {"pose", "behaviour", "appearance"}
    # the chosen prompt is the most concentrated one among those with more than top_k
    # distinct answers (all of them if none has)
    distinct = {p: len({normalize_answer(x) for x in a}) for p, a in stored["answers"].items()}
    assert stats["distinct_answers"] == distinct
    open_prompts = [p for p in distinct if distinct[p] > spa["top_k"]] or list(distinct)
    assert spa["concentrations"][spa["prompts"][0]] == max(spa["concentrations"][p]
                                                           for p in open_prompts)
    assert spa["prompts"][0] in open_prompts
    assert sum(spa["counts"][spa["prompts"][0]].values()) == len(stored["frame"])
    assert stats["train_windows"] > 0 and stats["error_ref"] >= 0
    capsys.readouterr()
    assert main(["eval", "run", str(run_dir), "--split", "test"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["split"] == "test" and summary["clips"] > 0
    for method in ("vlavad", "spa", "s3m_answers", "knn_visual", "frame_difference"):
        assert 0.0 <= summary[method]["micro_auc"] <= 1.0, method
    assert json.loads((run_dir / "eval_test.json").read_text()) == summary
    # the test split's answers are cached, to the chosen prompt at least (another run on
    # the same inputs may have asked more)
    test_answers = json.loads(_cached(run_dir, "test").read_text())["answers"]
    assert set(spa["prompts"]) <= set(test_answers)


def test_the_answer_cache_key_follows_what_the_answers_depend_on(tiny_run):
    _, run_dir = tiny_run
    same = _cached(run_dir, "val")
    # the run's seeds, the predictor and the scoring leave the answers as they are
    assert _cached(run_dir, "val", data_seed=5, predictor="rnn", weight=1.0, top_k=2) == same
    assert _cached(run_dir, "val", cache_dir="/elsewhere").name == same.name
    # the split, the clips, the decoding and the tracks do not
    job = config_lib.load(Config, run_dir / "config.json").vlavad
    others = [_cached(run_dir, "test"), _cached(run_dir, "val", clip_len=job.clip_len + 1),
              _cached(run_dir, "val", answer_stride=job.answer_stride + 1),
              _cached(run_dir, "val", max_new_tokens=job.max_new_tokens + 1),
              _cached(run_dir, "val", tracks="tracker")]
    assert len({same, *others}) == 6
    # tracks from noisy detections depend on the seed of the noise
    assert (_cached(run_dir, "val", tracks="tracker", data_seed=1)
            != _cached(run_dir, "val", tracks="tracker"))


def test_scoring_overrides_fuse_and_smooth_the_run_differently(tiny_run):
    _, run_dir = tiny_run
    quiet = lambda *args: None  # noqa: E731
    job = config_lib.load(Config, run_dir / "config.json").vlavad
    scores, _ = vlavad_scores(run_dir, "test", quiet)
    lambda_1 = dataclasses.replace(job, weight=1.0, normalize="split", sigma=0.0)
    again, _ = vlavad_scores(run_dir, "test", quiet, scoring=lambda_1)
    halves = {"spa": scores["spa"], "s3m": scores["s3m_answers"]}
    own = fuse(halves, {"spa": 1.0, "s3m": job.weight}, job.normalize)
    overridden = fuse(halves, {"spa": 1.0, "s3m": 1.0}, "split")
    for video in own:
        np.testing.assert_allclose(scores["vlavad"][video], own[video])
        np.testing.assert_allclose(again["vlavad"][video], overridden[video])
    files = lambda: {p.name: p.read_bytes() for p in run_dir.glob("eval_*")}  # noqa: E731
    before = files()
    aucs = vlavad_aucs(run_dir, "test", quiet, scoring=lambda_1)
    assert (aucs["weight"], aucs["normalize"], aucs["sigma"]) == (1.0, "split", 0.0)
    assert files() == before                     # the run's own evaluations stay as they were


def test_asking_another_prompt_keeps_the_answers_already_stored(tiny_run, tmp_path):
    _, run_dir = tiny_run
    cfg = config_lib.load(Config, run_dir / "config.json")
    cfg = dataclasses.replace(cfg, vlavad=dataclasses.replace(cfg.vlavad,
                                                              cache_dir=str(tmp_path)))
    backbone = load_frozen_backbone(cfg.vlavad.backbone)
    said = []
    pose = answers_of(cfg, backbone, "val", ("pose",), said.append)
    behaviour = answers_of(cfg, backbone, "val", ("behaviour",), said.append)
    assert behaviour.answers["pose"] == pose.answers["pose"]
    assert len(behaviour.answers["behaviour"]) == len(pose)
    asked = [m for m in said if "VLAVAD: asking" in m]
    assert len(asked) == 2 and "pose" in asked[0] and "behaviour" in asked[1]
    stored = json.loads(answers_path(cfg, backbone, "val").read_text())
    assert set(stored["answers"]) == {"pose", "behaviour"}
    said.clear()
    again = answers_of(cfg, backbone, "val", ("pose", "behaviour"), said.append)  # read back
    assert again.answers == behaviour.answers
    assert not [m for m in said if "VLAVAD: asking" in m] and "answer cache hit" in said[0]
    assert sorted(p.suffix for p in tmp_path.iterdir()
                  if not p.name.startswith(".")) == [".json", ".npy"]
    assert not list(tmp_path.glob(".*tmp*"))                    # no temporary file left


def test_a_process_waits_for_the_one_asking_and_reads_its_answers(tiny_run, tmp_path):
    """Independent processes sharing the answer cache (a sweep's --parallel-runs): while one
    holds a split's lock the other waits, then reads what the first stored, asking nothing."""
    _, run_dir = tiny_run
    cfg = config_lib.load(Config, run_dir / "config.json")
    backbone = load_frozen_backbone(cfg.vlavad.backbone)
    shared, first = tmp_path / "shared", tmp_path / "first"
    in_dir = lambda d: dataclasses.replace(  # noqa: E731
        cfg, vlavad=dataclasses.replace(cfg.vlavad, cache_dir=str(d)))
    asked = answers_of(in_dir(first), backbone, "val", ("pose",), lambda m: None)
    path = answers_path(in_dir(shared), backbone, "val")
    said, result = [], {}
    with waiting_lock(path.with_name(f".{path.stem}.lock")):    # "the first process"
        reader = threading.Thread(target=lambda: result.update(a=answers_of(
            in_dir(shared), backbone, "val", ("pose",), said.append)))
        reader.start()
        reader.join(timeout=1.0)
        assert reader.is_alive() and not said                    # waiting, asking nothing
        for name in (path.with_suffix(".npy").name, path.name):  # it stores its answers
            shutil.copyfile(first / name, shared / name)
    reader.join(timeout=60)
    assert not reader.is_alive() and result["a"].answers == asked.answers
    assert not [m for m in said if "VLAVAD: asking" in m]


def test_the_shares_of_several_processes_join_into_the_one_process_answers(tiny_run):
    _, run_dir = tiny_run
    cfg = config_lib.load(Config, run_dir / "config.json")
    backbone = load_frozen_backbone(cfg.vlavad.backbone)
    said = []
    whole = ask_share(cfg, backbone, "val", ("pose",), None, (0, 1), said.append)
    n = len(whole.videos)
    # every 2nd video, and a share with no video at all, in any order
    shares = [ask_share(cfg, backbone, "val", ("pose",), None, share, said.append)
              for share in ((1, 2), (n, n + 1), (0, 2))]
    joined = join_shares(shares, make_reader(cfg.prepare.layout, cfg.prepare_source)
                         .video_names("val"), ROWS)
    assert joined.videos == whole.videos and joined.category == whole.category
    assert joined.answers == whole.answers and len(whole) > 0
    for name in ("video", "frame", "object", "pooled"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(whole, name))
    # a share keeps its rows of the stored answers and asks nothing again, an empty one too
    said.clear()
    kept = ask_share(cfg, backbone, "val", ("pose",), whole, (1, 2), said.append)
    assert kept.answers == shares[0].answers and not [m for m in said if "asking" in m]
    stored = dataclasses.replace(whole, answers={**whole.answers, "mood": ["?"] * len(whole)})
    empty = ask_share(cfg, backbone, "val", ("pose",), stored, (n, n + 1), said.append)
    assert empty.answers == {"pose": [], "mood": []} and not [m for m in said if "asking" in m]


def test_track_windows_follow_each_track_and_restart_at_a_gap():
    job = config_lib.resolve("tiny", ["vlavad.answer_stride=4"]).vlavad   # L_p 2 -> L_f 1
    frames = np.array([3, 7, 11, 15, 23, 27, 31, 3, 7, 11])   # object 1 skips frame 19
    objects = np.array([1] * 7 + [2] * 3)
    emb = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    a = SplitAnswers(["v"], {"v": np.zeros(32, np.int64)}, np.zeros(10, np.int64), frames,
                     objects, ["person"] * 10, {}, np.zeros((10, 4), np.float32))
    w = track_windows(a, emb, job)
    # object 1: [3,7,11,15] -> 2 windows, [23,27,31] -> 1; object 2: [3,7,11] -> 1
    assert sorted(w.frames[:, 0].tolist()) == [11, 11, 15, 31]
    row = int(np.flatnonzero(w.frames[:, 0] == 31)[0])
    np.testing.assert_allclose(w.past[row, :, 0], [4, 5])      # rows of frames 23 and 27
    np.testing.assert_allclose(w.future[row, :, 0], [6])


def test_knn_distance_is_one_minus_the_nearest_cosine():
    bank = np.array([[1.0, 0.0], [0.0, 2.0]])
    queries = np.array([[3.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(knn_distance(bank, queries), [0.0, 1 - 2 ** -0.5, 1.0],
                               atol=1e-6)


def test_eval_of_an_unfinished_run_names_the_missing_file(tmp_path):
    with pytest.raises(DataError, match="vlavad_stats.json"):
        evaluate_vlavad_run(tmp_path)


@pytest.mark.slow
def test_two_processes_train_the_one_process_run(tiny_backbone, tiny_run, tmp_path):
    """`tvad train vlavad` on 2 processes on 127.0.0.1 (one CPU device each): each asks about
    half of the videos, the predictor trains data-parallel; the stored answers are the
    one-process run's and so are SPA's choice and the predictor's median error."""
    import portpicker
    from processes import job_env, run_together

    cfg, one = tiny_run
    repo = Path(__file__).resolve().parents[2]
    port = portpicker.pick_unused_port()
    cache = tmp_path / "answers"          # not the one-process run's cache: ask anew
    command = [sys.executable, "-m", "tvad_jax.cli", "train", "vlavad", "--config", "tiny",
               "--run-dir", str(tmp_path / "run"), f"synth.out_dir={cfg.synth.out_dir}",
               f"vlavad.backbone={tiny_backbone[1]}", f"vlavad.cache_dir={cache}"]
    run_together([(command, job_env(pid, 2, port)) for pid in range(2)], repo, timeout=900)
    ours = _cached(tmp_path / "run", "train_normal")
    assert ours.parent == cache
    stored = [json.loads(path.read_text()) for path in (_cached(one, "train_normal"), ours)]
    assert stored[0] == stored[1]
    a, b = (json.loads((run / "vlavad_stats.json").read_text()) for run in (one, tmp_path / "run"))
    assert a["spa"] == b["spa"] and a["train_windows"] == b["train_windows"]
    np.testing.assert_allclose(b["error_ref"], a["error_ref"], rtol=1e-3, atol=1e-5)
    assert sorted(p.name for p in cache.iterdir()) == [
        ours.name, ours.with_suffix(".npy").name]     # no share left behind
