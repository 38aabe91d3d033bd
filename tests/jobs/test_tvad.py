"""T-VAD end to end on the tiny benchmark with a tiny random backbone: stage 1 alone
(variant no_rae), then stage 2 on top of that AHD (--stage1-from), evaluation, detection,
dialogue. Asserts what the stages must guarantee, not what a tiny model learns."""
import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from byte_tokenizers import chatml_tokenizer
from flax import traverse_util
from processes import kill_when

from tvad_jax import config as config_lib
from tvad_jax.cli import main
from tvad_jax.data.dialogues import chat_format, read_annotations
from tvad_jax.data.video_io import read_video
from tvad_jax.eval.metrics import judgment_scores
from tvad_jax.infer.dialogue import Dialogue
from tvad_jax.infer.heatmaps import decoder_view
from tvad_jax.infer.judgment import judgment_gap, judgment_prompt
from tvad_jax.jobs import tvad_stages
from tvad_jax.models.decoder import Decoder
from tvad_jax.models.generate import generate
from tvad_jax.models.tvad import (class_text_features, clip_prompt_maps, decoder_inputs,
                                  load_frozen_backbone, load_model, special_token_ids)


@pytest.fixture(scope="module")
def trained(tiny_backbone, tmp_path_factory):
    """(cfg args, backbone dir, stage-1-only model dir, full model dir)."""
    cfg, backbone = tiny_backbone
    root = tmp_path_factory.mktemp("tvad")
    args = ["--config", "tiny", f"synth.out_dir={cfg.synth.out_dir}",
            f"runs_dir={root / 'runs'}", f"tvad.backbone={backbone}"]
    assert main(["train", "tvad", "--run-dir", str(root / "ahd"), *args,
                 "tvad.model.variant=no_rae"]) == 0
    assert main(["train", "tvad", "--run-dir", str(root / "full"),
                 "--stage1-from", str(root / "ahd" / "model"), *args]) == 0
    return args, backbone, root / "ahd" / "model", root / "full" / "model"


def _flat(tree):
    return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def test_stage2_changes_only_lora_targets_and_prompt_tokens(trained):
    _, backbone_dir, ahd_dir, full_dir = trained
    stage1, full = load_model(ahd_dir), load_model(full_dir)
    assert full.cfg.variant == "full" and stage1.cfg.variant == "no_rae"
    # the AHD (frozen in stage 2) is bit-identical to the stage-1 export
    for path, value in _flat(stage1.params).items():
        np.testing.assert_array_equal(_flat(full.params)[path], value, err_msg=path)
    backbone = load_frozen_backbone(backbone_dir)
    # stage 1 trained the AHD only: its frozen class features are still the text tower's
    text = class_text_features(full.cfg, backbone.cfg, backbone.params, backbone.tokenizer)
    np.testing.assert_array_equal(stage1.params["text"], np.asarray(text))
    before = _flat(backbone.params["decoder"])
    after = _flat(full.backbone.params["decoder"])
    assert before.keys() == after.keys()
    changed = {p for p in before if not np.array_equal(before[p], after[p])}
    assert changed == {"layers/attn/query/kernel", "layers/attn/value/kernel", "embed"}
    ids = special_token_ids(full.backbone.tokenizer)
    rows = np.flatnonzero((before["embed"] != after["embed"]).any(axis=1))
    assert set(rows) <= set(ids.tolist())
    np.testing.assert_array_equal(after["embed"][ids], np.asarray(full.params["special"]))
    assert full.params["rae"] and full.params["special"].shape == (3, before["embed"].shape[1])


def test_train_summaries_show_the_phases(trained):
    run = trained[3].parent
    for phase in ("stage2-A", "stage2-B"):
        summary = json.loads((run / phase / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["best_checkpoint"] is not None
        assert "val_loss" in summary["best_checkpoint"]["metrics"]
    stage1 = json.loads((trained[2].parent / "stage1" / "summary.json").read_text())
    assert "val_micro_auc" in stage1["best_checkpoint"]["metrics"]


def test_phase_b_validates_the_judgment_the_exported_model_gives(trained):
    """Phase B scores the teacher-forced judgment of every val video (phase A, whose
    narratives ask nothing, does not); its best checkpoint's scores are the exported model's
    (LoRA merged) on the same videos."""
    args, _, _, full_dir = trained
    run = full_dir.parent
    phase_a, phase_b = (json.loads((run / p / "summary.json").read_text())["best_checkpoint"]
                        for p in ("stage2-A", "stage2-B"))
    assert not any(k.startswith("val_yes") for k in phase_a["metrics"])
    cfg = config_lib.resolve("tiny", args[2:])
    model = load_model(full_dir)
    view = decoder_view(model, cfg, "val", report=lambda msg: None)
    prompt, prefix = judgment_prompt(model.backbone.tokenizer), chat_format(
        model.backbone.tokenizer).prefix
    gap = [float(judgment_gap(model.cfg, model.backbone.cfg, model.backbone.params["decoder"],
                              model.params["rae"], model.params["special"],
                              view[i]["visual"][None], view[i]["maps"][None], prompt,
                              prefix=prefix)[0]) for i in range(len(view))]
    abnormal = [row["abnormal"] for row in read_annotations(cfg.prepared_dir, "val")]
    for key, value in judgment_scores(np.asarray(abnormal), np.asarray(gap)).items():
        assert phase_b["metrics"][f"val_{key}"] == pytest.approx(value), key


def test_phase_b_with_swapped_visual_tokens_trains_its_judgment(trained, tmp_path, capsys):
    args, _, ahd_dir, _ = trained
    assert main(["train", "tvad", "--run-dir", str(tmp_path / "swap"), "--stage1-from",
                 str(ahd_dir), *args, "tvad.stage2.visual_swap=1",
                 "tvad.stage2.judgment_from_swap=false",
                 "tvad.stage2.phase_a.loop.steps=2", "tvad.stage2.phase_b.loop.steps=2"]) == 0
    err = capsys.readouterr().err
    assert "phase B (full): " in err and "P_V swapped in 100% of its examples" in err
    assert "the judgment trained on those alone" not in err
    assert "their maps mirrored" in err                               # swap_flip_maps' default
    assert "P_V swapped" not in err.split("phase B (full): ")[0]      # phase B only
    summary = json.loads((tmp_path / "swap" / "stage2-B" / "summary.json").read_text())
    assert summary["status"] == "completed"


def test_a_judgment_without_both_kinds_of_val_video_is_refused_before_any_output(
        trained, tmp_path, monkeypatch, capsys):
    """Phase B asked to choose its checkpoint by the val judgment: a val split of abnormal
    videos alone cannot score it: one line naming the setting and the split, no run folder."""
    args, _, ahd_dir, _ = trained
    read = tvad_stages.read_annotations
    monkeypatch.setattr(tvad_stages, "read_annotations", lambda prepared, split: [
        dict(row, abnormal=True) if split == "val" else row for row in read(prepared, split)])
    by_judgment = ["tvad.stage2.phase_b.checkpoint.best_metric="
                   "val_yes_no_logit_balanced_accuracy",
                   "tvad.stage2.phase_b.checkpoint.best_mode=max"]
    assert main(["train", "tvad", "--run-dir", str(tmp_path / "run"), "--stage1-from",
                 str(ahd_dir), *args, *by_judgment]) == 2
    err = capsys.readouterr().err
    assert "best_metric=val_yes_no_logit_balanced_accuracy" in err
    assert "'val' holds only abnormal videos" in err and not (tmp_path / "run").exists()


def test_eval_run_reports_heatmap_and_text_metrics(trained, capsys):
    run = trained[3].parent
    assert main(["eval", "run", str(run), "--plot"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("micro_auc", "macro_auc", "rbdc", "tbdc", "yes_no_accuracy",
                "yes_no_balanced_accuracy", "frame_difference_micro_auc"):
        assert 0.0 <= out[key] <= 1.0, key
    assert out["variant"] == "full" and out["split"] == "test"
    transcript = json.loads((run / "dialogue_full_test.json").read_text())
    assert len(transcript) == 4
    assert all(set(t) == {"yes_no", "target", "trajectory", "time"} for t in transcript.values())
    assert (run / "eval_test.md").is_file() and (run / "roc_test.png").stat().st_size > 0


def test_detect_writes_scores_overlay_and_judgment(trained, tiny_prepared, tmp_path, capsys):
    cfg, _ = tiny_prepared
    video = sorted(Path(cfg.synth.out_dir).rglob("*.mp4"))[0]
    frames = read_video(video)
    assert main(["detect", str(trained[3]), str(video), "--runs-root", str(tmp_path)]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    scores = np.load(run / f"{video.stem}.scores.npy")
    assert scores.shape == (len(frames),) and ((0 <= scores) & (scores <= 1)).all()
    overlay = read_video(run / f"{video.stem}.overlay.mp4")
    assert overlay.shape == frames.shape
    line = json.loads((run / "detections.jsonl").read_text())
    assert line["judgment"] in ("yes", "no", None) and line["heatmap_judgment"] in ("yes", "no")
    assert line["heatmap_judgment"] == ("yes" if scores.max() > 0.5 else "no")


def test_chat_from_a_questions_file(trained, tiny_prepared, tmp_path, capsys):
    cfg, _ = tiny_prepared
    video = sorted(Path(cfg.synth.out_dir).rglob("*.mp4"))[0]
    questions = tmp_path / "questions.txt"
    questions.write_text("Is there any anomaly in this video?\nHow does it move?\n")
    assert main(["chat", str(trained[3]), str(video), "--questions", str(questions),
                 "--runs-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("Q: ") == 2 and out.count("A: ") == 2
    transcript = json.loads(next(tmp_path.glob("chat-*/transcript.json")).read_text())
    assert [t["question"] for t in transcript] == questions.read_text().splitlines()


def _one_clip(model) -> tuple[np.ndarray, np.ndarray]:
    """(visual tokens, RAE maps) of one random clip."""
    from tvad_jax.infer.features import make_encoder

    clip = np.random.default_rng(0).normal(size=(1, 8, 48, 48, 3)).astype(np.float32)
    hidden, visual = (np.asarray(a) for a in make_encoder(model.backbone.cfg,
                                                          model.backbone.params)(clip))
    return visual, clip_prompt_maps(model.cfg, model.params["ahd"], hidden, model.params["text"])


def _two_turns(model, visual, maps) -> tuple[list[int], str]:
    """(turn 1's generated ids through </s>, turn 2's answer) of a cached `Dialogue`."""
    chat = Dialogue(model, visual, maps, max_turns=2, max_new_tokens=6, question_len=64)
    chat.ask(Q1)
    reply = [int(t) for t in np.asarray(chat.last_tokens)[0]]
    answer2 = chat.ask(Q2)[0]
    with pytest.raises(ValueError, match="holds 2 turns"):   # the cache is full
        chat.ask(Q1)
    eos = model.backbone.cfg.decoder.eos_token_id
    return (reply[:reply.index(eos) + 1] if eos in reply else reply), answer2


def _greedy_from_scratch(model, before: list[int], embeds) -> str:
    """The answer greedy decoding gives from scratch after the ids `before` and `embeds`."""
    dec, params = model.backbone.cfg.decoder, model.backbone.params["decoder"]
    if before:
        words = Decoder(dec).apply({"params": params}, jnp.asarray([before]),
                                   method=Decoder.embed)
        embeds = jnp.concatenate([words.astype(embeds.dtype), embeds], axis=1)
    tokens, _ = generate(params, dec, embeds, None, 6, jax.random.key(0))
    ids = [int(t) for t in np.asarray(tokens)[0]]
    ids = ids[:ids.index(dec.eos_token_id)] if dec.eos_token_id in ids else ids
    return model.backbone.tokenizer.decode(ids, skip_special_tokens=True).strip()


Q1, Q2 = "Is there any anomaly in this video?", "How does the anomalous target move?"


def test_dialogue_reuses_the_cache_like_a_full_recomputation(trained):
    """Turn 2 decoded from the KV cache == greedy decoding of the whole history from
    scratch (prefix, question 1, the generated answer 1 and </s>, question 2)."""
    model = load_model(trained[3])
    visual, maps = _one_clip(model)
    reply, answer2 = _two_turns(model, visual, maps)
    tok = model.backbone.tokenizer
    history = ([tok.bos_token_id, *tok(Q1)["input_ids"]] + reply +
               [tok.bos_token_id, *tok(Q2)["input_ids"]])
    embeds, _ = decoder_inputs(model.cfg, model.backbone.cfg, model.backbone.params["decoder"],
                               model.params["rae"], model.params["special"], jnp.asarray(visual),
                               maps, jnp.asarray([history]))
    assert answer2 == _greedy_from_scratch(model, [], embeds)


def test_dialogue_in_a_chat_template_is_the_templates_conversation(trained):
    """With a ChatML tokenizer (ids 0-2 as the tiny one's pad, bos, eos) turn 2 decoded from
    the cache == greedy decoding from scratch of the conversation as the template writes it:
    the system and user openings before the video block, `<|im_end|>` and the assistant's
    opening after each question, the generated answer through `<|im_end|>`, then the next
    user turn."""
    model = load_model(trained[3])
    model.backbone = dataclasses.replace(model.backbone, tokenizer=chatml_tokenizer())
    visual, maps = _one_clip(model)
    reply, answer2 = _two_turns(model, visual, maps)
    tok = model.backbone.tokenizer

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    before = ids("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\n")
    after = (ids(Q1 + "<|im_end|>\n<|im_start|>assistant\n") + reply +
             ids("\n<|im_start|>user\n" + Q2 + "<|im_end|>\n<|im_start|>assistant\n"))
    embeds, _ = decoder_inputs(model.cfg, model.backbone.cfg, model.backbone.params["decoder"],
                               model.params["rae"], model.params["special"], jnp.asarray(visual),
                               maps, jnp.asarray([after]))
    assert answer2 == _greedy_from_scratch(model, before, embeds)


def test_eval_backbone_one_shot(trained, capsys):
    args = trained[0]
    assert main(["eval", "backbone", "--one-shot", *args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["variant"] == "plain_one_shot" and "micro_auc" not in out
    assert 0.0 <= out["yes_no_accuracy"] <= 1.0 and out["bleu4_target"] >= 0.0


def test_bad_model_folder_and_video_fail_with_one_line(trained, tmp_path, capsys):
    assert main(["detect", str(tmp_path / "missing"), str(tmp_path / "x.mp4")]) == 2
    assert "not a T-VAD model folder" in capsys.readouterr().err
    assert main(["detect", str(trained[3]), str(tmp_path / "x.mp4"),
                 "--runs-root", str(tmp_path)]) == 2
    assert "video file not found" in capsys.readouterr().err


def test_truncated_model_weights_fail_in_one_line(trained, tmp_path, capsys):
    """A copy of the model whose tvad.safetensors was cut short: `tvad detect` names the file,
    exit 2, before any video is read or run folder made."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for path in trained[3].iterdir():
        data = path.read_bytes()
        (model_dir / path.name).write_bytes(data[:len(data) // 2] if path.suffix ==
                                            ".safetensors" else data)
    runs_root = tmp_path / "runs"
    assert main(["detect", str(model_dir), str(tmp_path / "x.mp4"),
                 "--runs-root", str(runs_root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == err.splitlines()[-1]
    assert f"{model_dir / 'tvad.safetensors'}: cannot read safetensors" in err
    assert not runs_root.exists()


def test_chat_refuses_an_answer_budget_past_the_decoders_context(trained, tiny_prepared,
                                                                 tmp_path, capsys):
    """The tiny decoder holds 512 positions: 2048 new tokens are refused at once."""
    cfg, _ = tiny_prepared
    video = next(Path(cfg.synth.out_dir).rglob("*.mp4"))
    runs_root = tmp_path / "runs"
    assert main(["chat", str(trained[3]), str(video), "--max-new-tokens", "2048",
                 "--runs-root", str(runs_root)]) == 2
    err = capsys.readouterr().err
    assert "max_new_tokens 2048" in err and "decoder's context of 512 tokens" in err
    assert not runs_root.exists()


REPO = Path(__file__).resolve().parents[2]
# The two commands of the `trained` fixture: stage 1 alone (6 steps), and stage 2's phases A
# and B (4 steps each) on that AHD. Kill points: (stage folder, train step), all but the last
# step of the run (after which the command may be done before the signal).
_KILL_POINTS = {"ahd": [("stage1", s) for s in range(1, 6)],
                "full": [("stage2-A", s) for s in range(1, 5)] +
                        [("stage2-B", s) for s in range(1, 4)]}


def _steps_logged(metrics: Path) -> list[int]:
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    return [json.loads(line)["step"] for line in lines   # whole lines: the writer may be mid-way
            if line.endswith("}") and "train/loss" in line]


def _kill_at(argv: list[str], run_dir: Path, stage: str, step: int) -> None:
    """Run `tvad *argv` in a subprocess and SIGKILL it once `step` of `stage` is logged."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "tvad_jax.cli", *argv], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    kill_when(proc, lambda: step in _steps_logged(run_dir / stage / "metrics.jsonl"),
              f"step {step} of {stage}")


@pytest.mark.parametrize("command", ["ahd", pytest.param("full", marks=pytest.mark.slow)])
def test_kill9_at_a_random_step_then_rerun_gives_identical_model_files(trained, tmp_path,
                                                                       command):
    """`tvad train tvad` killed with SIGKILL after a random train step (mid-stage, during a
    checkpoint save or evaluation, between phases), then the same command again: the exported
    model files equal the uninterrupted run's byte for byte, and every stage logged each step
    exactly once."""
    args, _, ahd_dir, full_dir = trained
    extra = (["tvad.model.variant=no_rae"] if command == "ahd"
             else ["--stage1-from", str(ahd_dir)])
    reference = ahd_dir if command == "ahd" else full_dir
    stage, step = random.choice(_KILL_POINTS[command])
    run_dir = tmp_path / "run"
    argv = ["train", "tvad", "--run-dir", str(run_dir), *args, *extra]
    _kill_at(argv, run_dir, stage, step)
    assert not (run_dir / "model").exists(), (stage, step)
    assert main(argv) == 0
    for path in sorted(reference.iterdir()):
        assert (run_dir / "model" / path.name).read_bytes() == path.read_bytes(), \
            (path.name, stage, step)
    assert sorted(p.name for p in (run_dir / "model").iterdir()) == \
        sorted(p.name for p in reference.iterdir())
    for metrics in run_dir.glob("*/metrics.jsonl"):
        train_steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()
                       if "train/loss" in line]
        assert train_steps == sorted(set(train_steps)) == list(range(1, len(train_steps) + 1)), \
            (metrics, stage, step)


def test_feature_layers_choose_what_the_ahd_reads(trained, tmp_path, capsys):
    """tvad.model.feature_layers (the tvad_layers family): the AHD gets one MLP per chosen
    layer, the exported model reloads the same layers, and a stage 1 trained on other layers
    is refused for reuse."""
    args, backbone_dir, ahd_dir, _ = trained
    depth = load_frozen_backbone(backbone_dir).cfg.vision.depth
    assert main(["train", "tvad", "--run-dir", str(tmp_path / "last"), *args,
                 "tvad.model.variant=no_rae", "tvad.model.feature_layers=1.0",
                 "tvad.stage1.train.loop.steps=2"]) == 0
    model = load_model(tmp_path / "last" / "model")
    assert model.backbone.cfg.vision.layer_indices == (depth,)
    assert model.cfg.ahd.num_layers == 1
    assert {k for k in model.params["ahd"] if k.startswith("fc1_")} == {"fc1_0"}
    assert main(["train", "tvad", "--run-dir", str(tmp_path / "mixed"),
                 "--stage1-from", str(tmp_path / "last" / "model"), *args]) == 2
    assert "its AHD reads vision layers" in capsys.readouterr().err
    assert not (tmp_path / "mixed").exists()


@pytest.mark.slow
def test_two_processes_train_the_one_process_model(trained, tmp_path):
    """`tvad train tvad` on 2 processes on 127.0.0.1 (one CPU device each, data-parallel over
    both, each process loading half of every batch): stage 1, then stage 2 on that AHD,
    give the models of the one-process runs up to float summation order."""
    import portpicker
    from processes import job_env, run_together

    args, _, ahd_dir, full_dir = trained
    repo = Path(__file__).resolve().parents[2]
    port = portpicker.pick_unused_port()

    def both(options, *overrides):
        command = [sys.executable, "-m", "tvad_jax.cli", "train", "tvad", *options, *args,
                   *overrides]
        run_together([(command, job_env(pid, 2, port)) for pid in range(2)], repo, timeout=900)

    both(["--run-dir", str(tmp_path / "ahd")], "tvad.model.variant=no_rae")
    port = portpicker.pick_unused_port()
    both(["--run-dir", str(tmp_path / "full"), "--stage1-from", str(tmp_path / "ahd" / "model")])
    summary = json.loads((tmp_path / "ahd" / "stage1" / "summary.json").read_text())
    assert summary["processes"] == 2
    for one, two in ((ahd_dir, tmp_path / "ahd" / "model"),
                     (full_dir, tmp_path / "full" / "model")):
        a, b = load_model(one), load_model(two)
        for tree_a, tree_b in ((a.params, b.params),
                               (a.backbone.params["decoder"], b.backbone.params["decoder"])):
            flat_b = _flat(tree_b)
            for path, value in _flat(tree_a).items():
                np.testing.assert_allclose(flat_b[path], value, rtol=1e-3, atol=1e-4,
                                           err_msg=path)
