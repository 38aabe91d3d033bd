"""Paper 003's detector as a job: train and evaluate end to end through the CLI (tiny config,
random tiny backbone), the frame scores of object errors, TSGM, the ITAM it reads, bad input,
2 processes. Its objects: test_local_objects.py."""
import contextlib
import dataclasses
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tvad_jax import config as config_lib, configs  # noqa: F401  (registers the configs)
from tvad_jax.cli import main
from tvad_jax.config import ConfigError
from tvad_jax.errors import DataError
from tvad_jax.jobs.config import Config
from tvad_jax.jobs.local_objects import SplitObjects
from tvad_jax.jobs.local_patterns import (TSGM, crop_aucs, evaluate_local_patterns_run,
                                          frame_scores, itam_config, itam_reader, pretrained_itam)
from tvad_jax.models.tvad import load_frozen_backbone


@pytest.fixture(scope="module")
def tiny_run(tiny_backbone, tmp_path_factory):
    cfg, backbone = tiny_backbone
    runs = tmp_path_factory.mktemp("local_runs")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", "local-patterns", "--config", "tiny",
                     f"synth.out_dir={cfg.synth.out_dir}", f"runs_dir={runs}",
                     f"local.backbone={backbone}"])
    assert code == 0
    return cfg, Path(out.getvalue().strip().splitlines()[-1])


def test_train_then_eval_through_the_cli(tiny_run, capsys):
    cfg, run_dir = tiny_run
    for name in ("config.json", "local_stats.json", "itam/metrics.jsonl", "rm/metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    stats = json.loads((run_dir / "local_stats.json").read_text())
    # G (ITAM width 16) beside the 8-bin motion histogram, standardized on train_normal
    assert stats["features"] == 16 + 8 and len(stats["mean"]) == 24
    assert stats["train_split"] == "train_normal" and stats["error_ref"] > 0
    capsys.readouterr()
    assert main(["eval", "run", str(run_dir), "--split", "test"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["split"] == "test" and summary["objects"] > 0
    for method in ("local_patterns", "frame_difference"):
        assert 0.0 <= summary[method]["micro_auc"] <= 1.0
    # the object scores alone against the crops whose object acts an anomaly, per type too
    assert 0.0 <= summary["crop_auc"]["all"] <= 1.0 and summary["crop_auc"]["per_anomaly_type"]
    assert json.loads((run_dir / "eval_test.json").read_text()) == summary


def test_crop_aucs_rank_each_types_crops_against_the_normal_ones():
    acting = ["", "", "", "falling", "falling", "fighting"]
    errors = np.array([0.1, 0.4, 0.2, 0.3, 0.5, 0.05])
    out = crop_aucs(acting, errors)
    # falling: positives 0.3, 0.5 against normals 0.1, 0.4, 0.2: 5 of 6 pairs ordered
    assert out["per_anomaly_type"] == pytest.approx({"falling": 5 / 6, "fighting": 0.0})
    # all: the 3 positives against the 3 normals, 5 of 9 pairs ordered
    assert out["all"] == pytest.approx(5 / 9)
    assert crop_aucs(["", ""], np.array([0.1, 0.2])) == {}


def test_frame_scores_take_the_max_over_the_crops_covering_each_frame():
    # video "a", stride 2: crops at t = 1 (frames 0, 1) and t = 3 (frames 2, 3), two objects
    # at t = 3;
    # video "b" has no crop at all: its frames score 0
    objects = SplitObjects(videos=["a", "b"], labels={"a": np.zeros(5), "b": np.zeros(3)},
                           video=np.array([0, 0, 0]), frame=np.array([1, 3, 3]),
                           object=np.array([1, 1, 2]), tokens=np.zeros((3, 1, 1)),
                           motion=np.zeros((3, 8)), texts=[], acting=[])
    scores = frame_scores(objects, np.array([1.0, 3.0, 1.0]), error_ref=1.0, stride=2)
    np.testing.assert_allclose(scores["a"], [0.5, 0.5, 0.75, 0.75, 0.0])
    np.testing.assert_allclose(scores["b"], [0.0, 0.0, 0.0])
    # with stride 1 a crop speaks for its own frame only
    np.testing.assert_allclose(frame_scores(objects, np.array([1.0, 3.0, 1.0]), 1.0, 1)["a"],
                               [0.0, 0.5, 0.0, 0.75, 0.0])


def test_tsgm_keeps_a_tracks_sentence_while_the_smm_says_yes():
    # object 1 at t = 1, 3, 5 and object 2 at t = 3, 5 (rows in frame order); the stub SMM
    # says "yes" to sentence "A" only
    objects = SplitObjects(videos=["v"], labels={"v": np.zeros(6)}, video=np.zeros(5, int),
                           frame=np.array([1, 3, 3, 5, 5]), object=np.array([1, 1, 2, 1, 2]),
                           tokens=np.zeros((5, 1, 1)), motion=np.zeros((5, 8)), texts=[],
                           acting=[])
    asked = []

    class StubTSGM(TSGM):
        def __init__(self):  # no SMM: `keeps` below answers
            pass

        def keeps(self, previous, image):
            asked.append(list(previous))
            return np.asarray([s == "A" for s in previous])

    captions, captioned = np.array(["A", "B", "C", "E", "D"]), []

    def caption(rows):
        captioned.append(rows.tolist())
        return captions[rows].tolist()

    out = StubTSGM().sentences(objects, np.zeros((5, 1)), caption)
    # object 1 keeps "A" over the captions "B" and "E"; object 2 is new at t = 3 (its caption
    # "C"), and "C" does not hold at t = 5, so the caption "D" replaces it
    assert out == ["A", "A", "C", "A", "D"]
    assert asked == [["A"], ["A", "C"]]
    # the captioner reads only the crops whose sentence is not kept: rows 0, 2 and 4
    assert captioned == [[0], [2], [4]]


def test_the_itam_reads_each_distinct_sentence_once(tiny_run):
    cfg = config_lib.load(Config, tiny_run[1] / "config.json")
    reader = itam_reader(cfg.local, load_frozen_backbone(cfg.local.backbone), tiny_run[1])
    read, text = [], reader._text
    reader._text = lambda ids: read.append(np.asarray(ids)) or text(ids)
    features = reader.text_features(["a red car", "a person", "a red car"])
    ids = np.concatenate(read)
    assert (ids[:, 0] != reader.tokenizer.pad_token_id).sum() == 2     # the rest is padding
    np.testing.assert_array_equal(features[0], features[2])
    for i, sentence in ((0, "a red car"), (1, "a person")):
        np.testing.assert_allclose(features[i], reader.text_features([sentence])[0], atol=1e-6)


def test_eval_of_an_unfinished_run_names_the_missing_file(tmp_path):
    with pytest.raises(DataError, match="local_stats.json.*not a finished run"):
        evaluate_local_patterns_run(tmp_path)


def test_a_run_with_its_own_itam_is_never_read_with_the_backbones(tiny_run):
    """A run trained before `local.itam` existed loads with the default "backbone": a named
    error, not a silent swap of its ITAM."""
    cfg = config_lib.load(Config, tiny_run[1] / "config.json")
    assert cfg.local.itam == "train" and (tiny_run[1] / "itam").is_dir()
    job = dataclasses.replace(cfg.local, itam="backbone")
    with pytest.raises(ConfigError, match=r"trained an ITAM of its own.*\"itam\": \"train\""):
        itam_reader(job, load_frozen_backbone(cfg.local.backbone), tiny_run[1])


def test_the_shipped_backbone_carries_the_itam_the_default_job_reads():
    cfg = config_lib.resolve("default", [])
    assert cfg.local.itam == "backbone"
    backbone = load_frozen_backbone()
    icfg = itam_config(cfg.local, backbone)
    params = pretrained_itam(icfg, backbone, cfg.local.tokens)        # sizes checked
    assert params["token_embed"].shape == (len(backbone.tokenizer), cfg.local.itam_width)
    # it read crops: a job reading tokens in context is told so, not handed it silently
    with pytest.raises(ConfigError, match=r"itam/config.json.*tokens crop \(the job's "
                                          r"local.tokens region\)"):
        pretrained_itam(icfg, backbone, "region")


@pytest.mark.slow
def test_two_processes_train_the_one_process_run(tiny_backbone, tiny_run, tmp_path):
    """`tvad train local-patterns` on 2 processes on 127.0.0.1 (one CPU device each): each
    reads half of every split's videos into a fresh object cache, ITAM, the SMM and RM train
    data-parallel; the statistics the run ends with (the features' mean and std, which pass
    through ITAM and TSGM, and RM's median error) are the one-process run's."""
    import portpicker
    from processes import job_env, run_together

    cfg, one = tiny_run
    repo = Path(__file__).resolve().parents[2]
    port = portpicker.pick_unused_port()
    command = [sys.executable, "-m", "tvad_jax.cli", "train", "local-patterns", "--config",
               "tiny", "--run-dir", str(tmp_path / "run"), f"synth.out_dir={cfg.synth.out_dir}",
               f"local.backbone={tiny_backbone[1]}", f"local.cache_dir={tmp_path / 'cache'}"]
    run_together([(command, job_env(pid, 2, port)) for pid in range(2)], repo, timeout=900)
    a, b = (json.loads((run / "local_stats.json").read_text()) for run in (one, tmp_path / "run"))
    assert a["train_objects"] == b["train_objects"] > 0
    for key in ("mean", "std", "error_ref"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-3, atol=1e-4, err_msg=key)
    # the joined cache of train_normal (RM's split and ITAM's), no share left behind
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()] == ["train_normal"]
