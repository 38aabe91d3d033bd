"""T-VAD end to end on the tiny benchmark with a tiny random backbone: stage 1 alone
(variant no_rae), then stage 2 on top of that AHD (--stage1-from), evaluation, detection,
dialogue. Asserts what the stages must guarantee, not what a tiny model learns."""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tvad_jax.cli import main
from tvad_jax.data.video_io import read_video
from tvad_jax.infer.dialogue import Dialogue
from tvad_jax.models.decoder import Decoder
from tvad_jax.models.generate import generate
from tvad_jax.models.tvad import (class_text_features, load_frozen_backbone, load_model,
                                  special_token_ids)


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


def test_dialogue_reuses_the_cache_like_a_full_recomputation(trained):
    """Turn 2 decoded from the KV cache == greedy decoding of the whole history from
    scratch (prefix, question 1, the generated answer 1 and </s>, question 2)."""
    model = load_model(trained[3])
    rng = np.random.default_rng(0)
    bcfg = model.backbone.cfg
    clip = rng.normal(size=(1, 8, 48, 48, 3)).astype(np.float32)
    from tvad_jax.infer.features import make_encoder

    hidden, visual = (np.asarray(a) for a in make_encoder(bcfg, model.backbone.params)(clip))
    chat = Dialogue(model, visual, hidden, max_turns=2, max_new_tokens=6, question_len=32)
    q1, q2 = "Is there any anomaly in this video?", "How does the anomalous target move?"
    chat.ask(q1)
    tokens1 = np.asarray(chat.last_tokens)[0]
    answer2 = chat.ask(q2)[0]

    tok, dec = model.backbone.tokenizer, bcfg.decoder
    eos = dec.eos_token_id
    reply = [int(t) for t in tokens1]
    reply = reply[:reply.index(eos) + 1] if eos in reply else reply
    history = ([tok.bos_token_id, *tok(q1)["input_ids"]] + reply +
               [tok.bos_token_id, *tok(q2)["input_ids"]])
    params = model.backbone.params["decoder"]
    words = Decoder(dec).apply({"params": params}, jnp.asarray([history]),
                               method=Decoder.embed)
    embeds = jnp.concatenate([chat.prefix, words], axis=1)
    tokens2, _ = generate(params, dec, embeds, None, 6, jax.random.key(0))
    ids = [int(t) for t in np.asarray(tokens2)[0]]
    ids = ids[:ids.index(eos)] if eos in ids else ids
    assert answer2 == tok.decode(ids, skip_special_tokens=True).strip()
    with pytest.raises(ValueError, match="holds 2 turns"):   # the cache is full
        chat.ask(q1)


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
