"""`tvad backbone import` end to end on the shared tiny Qwen2.5-VL checkpoint: import, then
`tvad train tvad` (stage 1, stage 2 with LoRA on q/v) and `tvad detect` on the imported
folder; bad sources fail in one line before anything is written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from shared_data import qwen_tiny_dir

from tvad_jax.models import backbone_io
from tvad_jax.models.qwen_backbone import QwenBackboneConfig
from tvad_jax.models.tokenizer import ANOMALY_TOKENS

QWEN = qwen_tiny_dir() / "model"


def test_import_then_train_and_detect(tvad, tiny_backbone, tmp_path):
    cfg, tokenizer_dir = tiny_backbone
    out = tmp_path / "qwen"
    result = tvad("backbone", "import", QWEN, out, "--tokenizer", tokenizer_dir,
                  "--image-size", 48)
    assert result.code == 0, result.err
    bcfg, params, tokenizer = backbone_io.load_backbone(out)
    assert isinstance(bcfg, QwenBackboneConfig) and bcfg.vision.image_size == 48
    assert bcfg.decoder.vocab_size == len(tokenizer) > 160          # the table grew
    assert bcfg.decoder.eos_token_id == tokenizer.eos_token_id
    assert all(t in tokenizer.get_vocab() for t in ANOMALY_TOKENS)
    np.testing.assert_allclose(params["decoder"]["embed"][160:],     # new rows: the mean row
                               np.broadcast_to(params["decoder"]["embed"][:160].mean(0),
                                               (len(tokenizer) - 160, 48)), atol=1e-3)

    args = ["--config", "tiny", f"synth.out_dir={cfg.synth.out_dir}",
            f"runs_dir={tmp_path / 'runs'}", f"tvad.backbone={out}",
            "tvad.stage1.train.loop.steps=2", "tvad.stage2.phase_a.loop.steps=2",
            "tvad.stage2.phase_b.loop.steps=2"]
    result = tvad("train", "tvad", "--run-dir", tmp_path / "run", *args)
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run" / "stage2-B" / "summary.json").read_text())
    assert summary["status"] == "completed"
    video = sorted(Path(cfg.synth.out_dir).glob("Scene*/*.mp4"))[0]
    result = tvad("detect", tmp_path / "run" / "model", video, "--no-overlay",
                  "--max-new-tokens", 4, "--runs-root", tmp_path / "detect")
    assert result.code == 0, result.err
    line, = (tmp_path / "detect").glob("*/detections.jsonl")
    row = json.loads(line.read_text())
    assert row["frames"] == 32 and 0 <= row["max_score"] <= 1 and row["answer"] is not None


def test_bad_sources_fail_in_one_line_and_write_nothing(tvad, tmp_path):
    out = tmp_path / "out"
    tvad("backbone", "import", tmp_path / "absent", out).failed_with("absent")
    tvad("backbone", "import", QWEN, QWEN, out).failed_with("a second qwen2_5_vl")
    tvad("backbone", "import", QWEN, out).failed_with(str(QWEN), "no tokenizer.json")
    tvad("backbone", "import", QWEN, out, "--tokenizer", backbone_io.SHIPPED_DIR,
         "--image-size", 50).failed_with("image_size 50 is not a multiple")
    assert not out.exists()
    out.mkdir()
    tvad("backbone", "import", QWEN, out).failed_with(str(out), "exists")
